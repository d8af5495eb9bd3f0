#!/usr/bin/env bash
# Schemathesis (every check) against a live chatwire: the embedded store in a
# temporary directory, BCRYPT_COST=4, a fixed JWT secret, authenticated as a
# user registered first. Exits non-zero on any failure schemathesis finds.
#
# Usage: tests/schemathesis/run.sh [CHATWIRE_BIN]
#   CHATWIRE_BIN     default target/debug/chatwire
#   ST               the `st` command (default tests/.venv-schemathesis/bin/st)
#   SCHEMATHESIS_SEED  the generation seed (default 1, so that a run replays;
#                      `random` draws one)
# Extra `st run` arguments can be passed in SCHEMATHESIS_ARGS.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
BIN="${1:-${CHATWIRE_BIN:-$ROOT/target/debug/chatwire}}"
ST="${ST:-$ROOT/tests/.venv-schemathesis/bin/st}"
PY="$(dirname "$ST")/python"

WORK="$(mktemp -d)"
SERVER_PID=
cleanup() {
  if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
  rm -rf "$WORK"
}
trap cleanup EXIT

# Thousands of logins from one address: the throttles (429, documented and
# tested in test_throttle.py) are lifted so that every case reaches its route.
DATABASE_URL="$WORK/data" JWT_SECRET="schemathesis-secret-0123456789abcdef" BCRYPT_COST=4 \
  AUTH_RATE_PER_MINUTE=1000000 AUTH_BURST=1000000 \
  LOGIN_FAILURES_PER_HOUR=1000000 LOGIN_FAILURE_BURST=1000000 \
  RUST_LOG=warn "$BIN" --host 127.0.0.1 --port 0 >"$WORK/stdout" 2>"$WORK/stderr" &
SERVER_PID=$!
URL=
for _ in $(seq 1 100); do
  URL="$(grep -oE 'http://127\.0\.0\.1:[0-9]+' "$WORK/stdout" | head -n1 || true)"
  [ -n "$URL" ] && break
  kill -0 "$SERVER_PID" 2>/dev/null || { cat "$WORK/stderr" >&2; exit 1; }
  sleep 0.1
done
[ -n "$URL" ] || { echo "chatwire did not say where it listens" >&2; exit 1; }
echo "chatwire at $URL"

{ read -r TOKEN; read -r MESSAGE_IDS; } < <("$PY" "$HERE/seed.py" "$URL")
echo "seeded messages $MESSAGE_IDS in chat general"

# A `beforeId` or `afterId` must name a message of the chat (else 422), which
# no parameter schema can say: schemathesis's configuration fixes them to the
# seeded messages (the oldest and the newest, a range with one message
# between) in chat `general`, in every phase; every other parameter of the
# route is generated, valid and not. (Their refusals are unit-tested in
# protocol/src/http/tests.rs.)
read -r -a IDS <<<"$MESSAGE_IDS"
CONFIG="$WORK/schemathesis.toml"
{
  cat "$HERE/schemathesis.toml"
  printf '\n[[operations]]\ninclude-name = "GET /messages"\n'
  printf 'parameters = { "query.chatId" = "general", "query.afterId" = "%s", "query.beforeId" = "%s" }\n' \
    "${IDS[0]}" "${IDS[${#IDS[@]}-1]}"
} >"$CONFIG"

SEED="${SCHEMATHESIS_SEED:-1}"
seed_args=(--seed "$SEED")
[ "$SEED" = random ] && seed_args=()

cd "$WORK"
# shellcheck disable=SC2086
"$ST" --config-file "$CONFIG" run "$URL/openapi.json" \
    --checks all \
    --header "Authorization: Bearer $TOKEN" \
    --workers 2 \
    --report junit --report-dir "$WORK/report" \
    "${seed_args[@]}" ${SCHEMATHESIS_ARGS:-}
status=$?
if ! kill -0 "$SERVER_PID" 2>/dev/null; then
  echo "chatwire died during the run:" >&2
  cat "$WORK/stderr" >&2
  exit 1
fi
exit "$status"
