#!/usr/bin/env bash
# The one test command: builds the workspace once (debug), runs the Rust
# tests, then the end-to-end suites (python-socketio, raw protocol,
# socket.io-client against `conformance`; REST, Socket.IO chat, durability
# and configuration against `chatwire`) against the binaries of that build,
# once per runtime (tokio: chatwire, conformance; smol: chatwire-smol,
# conformance_smol), among them three `chatwire` instances as one cluster
# on Debian's redis-server and the MongoDB-wire server; then schemathesis
# against `chatwire` (tokio), the API docs pages and the web chat (/app,
# both runtimes) in headless Chromium (Debian's, installed with apt).
#
# Then the container test (scripts/container-test.sh): the Dockerfile's
# runtime stage around the tokio debug binary, run with podman.
#
# Usage: scripts/test.sh [--e2e-only]
#   --e2e-only   skip the cargo build and cargo test (the binaries must exist)
#   E2E_RUNTIMES="smol"  run the e2e suites on these runtimes only (default: tokio smol)
#   CONTAINER_TEST=0     skip the container test
#
# Needs: the Rust toolchain, Python 3.11 + pip, Node 20 + npm; root (or
# sudo) for the Debian packages it installs when missing (redis-server;
# chromium; podman, buildah, debootstrap, runc for the container test) and
# deb.debian.org.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

# Nothing is cached outside the checkout: pip keeps no cache, npm's lives here.
export PIP_NO_CACHE_DIR=1
export npm_config_cache="$ROOT/tests/.npm-cache"

E2E_ONLY=0
for arg in "$@"; do
  case "$arg" in
    --e2e-only) E2E_ONLY=1 ;;
    *) echo "unknown argument: $arg" >&2; exit 2 ;;
  esac
done

section() {
  printf '\n==================== %s ====================\n' "$*"
}

FAILED=()
FAILED_LOGS=()
PASSED=()
# Each step's output goes to target/test-logs (and, as it comes, here), so
# that the end of a failed step's output is shown again after the summary,
# where the tail of a CI log shows it. A file, not a pipe: a server a test
# leaves behind cannot hold the step open.
LOG_DIR="$ROOT/target/test-logs"
mkdir -p "$LOG_DIR"
run_step() {
  local name="$1"
  shift
  section "$name"
  local log pid rc=0
  log="$LOG_DIR/step-$((${#PASSED[@]} + ${#FAILED[@]} + 1)).log"
  "$@" >"$log" 2>&1 &
  pid=$!
  tail -n +1 -f --pid="$pid" "$log" 2>/dev/null || true
  wait "$pid" || rc=$?
  if [ "$rc" -eq 0 ]; then
    PASSED+=("$name")
  else
    echo "!!! $name FAILED (exit $rc)"
    FAILED+=("$name")
    FAILED_LOGS+=("$log")
  fi
}

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac

# MongoDB-wire server for the store-mongo tests (and the Mongo e2e run):
# SecantusDB from PyPI in tests/.venv-mongo, unless MONGODB_TEST_URL already
# names a server (a real mongod, say). SecantusDB (one Python process) slows
# down as data piles up in it, so each e2e step gets a fresh one
# (fresh_mongo below).
MONGO_PID=""
trap '[ -z "$MONGO_PID" ] || kill "$MONGO_PID" 2>/dev/null || true' EXIT
start_secantusd() {
  # An in-memory test server: killed outright.
  [ -z "$MONGO_PID" ] || { kill -9 "$MONGO_PID" 2>/dev/null || true; wait "$MONGO_PID" 2>/dev/null || true; }
  local port
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
  "$SECANTUSD_BIN" --host 127.0.0.1 --port "$port" --storage-path ':memory:' \
    --log-level WARNING >>"$MONGO_VENV/secantusd.log" 2>&1 &
  MONGO_PID=$!
  for _ in $(seq 1 150); do
    if python3 -c "import socket,sys; socket.create_connection(('127.0.0.1', $port), 1)" 2>/dev/null; then
      break
    fi
    kill -0 "$MONGO_PID" 2>/dev/null || { tail -n 30 "$MONGO_VENV/secantusd.log" >&2; return 1; }
    sleep 0.2
  done
  export MONGODB_TEST_URL="mongodb://127.0.0.1:$port/chatwire_test"
  echo "MONGODB_TEST_URL=$MONGODB_TEST_URL"
}
# Between steps: a failure to restart shows in the steps that need it.
fresh_mongo() {
  [ -z "$MONGO_PID" ] || start_secantusd || echo "!!! SecantusDB did not restart"
}
if [ -z "${MONGODB_TEST_URL:-}" ]; then
  section "SecantusDB (tests/.venv-mongo)"
  MONGO_VENV="$ROOT/tests/.venv-mongo"
  MONGO_PIN="SecantusDB==0.7.0b3"
  if [ "$(cat "$MONGO_VENV/.pin" 2>/dev/null || true)" != "$MONGO_PIN" ]; then
    python3 -m venv "$MONGO_VENV"
    "$MONGO_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$MONGO_PIN"
    echo "$MONGO_PIN" >"$MONGO_VENV/.pin"
  fi
  export SECANTUSD_BIN="$MONGO_VENV/bin/secantusd-py"
  : >"$MONGO_VENV/secantusd.log"
  start_secantusd || exit 1
fi

if [ "$E2E_ONLY" -eq 0 ]; then
  section "cargo build --workspace --all-targets --locked"
  # a failed build stops everything: nothing else can run
  cargo build --workspace --all-targets --locked

  run_step "cargo test --workspace --locked" cargo test --workspace --locked
fi

# The e2e suites run once per runtime (E2E_RUNTIMES picks some), each time
# against that runtime's binaries; the blocking host is runtime-free.
E2E_RUNTIMES="${E2E_RUNTIMES:-tokio smol}"
export BLOCKING_BIN="${BLOCKING_BIN:-$TARGET_DIR/debug/examples/blocking}"

# A virtual environment in the checkout with a requirements file's packages,
# reinstalled only when that file changes.
venv_with() {
  local venv="$1" reqs="$2" stamp want
  if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
  fi
  stamp="$venv/.requirements.sha256"
  want="$(sha256sum "$reqs" | cut -d' ' -f1)"
  if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r "$reqs"
    echo "$want" >"$stamp"
  else
    echo "requirements unchanged, pip install skipped"
  fi
}

# The cluster tests (tests/e2e/python/test_cluster.py) start Debian's
# redis-server themselves.
section "redis-server (Debian)"
"$ROOT/scripts/apt-install.sh" redis-server
redis-server --version

section "python e2e environment (tests/.venv)"
VENV="$ROOT/tests/.venv"
venv_with "$VENV" "$ROOT/tests/e2e/python/requirements.txt"

section "js e2e environment (npm ci)"
(cd "$ROOT/tests/e2e/js" && npm ci --no-audit --no-fund --loglevel=error)

# Debian's Chromium (driven by playwright-core) for the API docs pages: the
# browser suite below, and the python suite's page checks.
section "browser e2e environment (chromium, npm ci)"
"$ROOT/scripts/apt-install.sh" chromium fonts-liberation
(cd "$ROOT/tests/e2e/browser" && npm ci --no-audit --no-fund --loglevel=error)

for RT in $E2E_RUNTIMES; do
  case "$RT" in
    tokio) CONFORMANCE=conformance CHATWIRE=chatwire ;;
    smol) CONFORMANCE=conformance_smol CHATWIRE=chatwire-smol ;;
    *) echo "unknown runtime in E2E_RUNTIMES: $RT" >&2; exit 2 ;;
  esac
  export CONFORMANCE_BIN="$TARGET_DIR/debug/examples/$CONFORMANCE"
  export CHATWIRE_BIN="$TARGET_DIR/debug/$CHATWIRE"
  for bin in "$CONFORMANCE_BIN" "$CHATWIRE_BIN"; do
    if [ ! -x "$bin" ]; then
      echo "binary missing: $bin" >&2
      exit 1
    fi
  done
  echo "runtime $RT: CONFORMANCE_BIN=$CONFORMANCE_BIN CHATWIRE_BIN=$CHATWIRE_BIN"

  fresh_mongo
  # Every e2e run is bounded: a hung server must fail the run, not stall it.
  run_step "python e2e ($RT): raw protocol + python-socketio + chatwire (REST, chat, process)" \
    timeout 600 "$VENV/bin/python" -m pytest -p no:cacheprovider "$ROOT/tests/e2e/python"

  fresh_mongo
  run_step "js e2e ($RT): socket.io-client (conformance + chatwire chat)" \
    bash -c 'cd "$1/tests/e2e/js" && timeout 600 node --test --test-concurrency=1 test/' _ "$ROOT"

  fresh_mongo
  # The cluster suite again on a three-primary Redis Cluster (the python
  # cluster suite runs on both by itself).
  run_step "js e2e ($RT, Redis Cluster): socket.io-client cluster suite" \
    bash -c 'cd "$1/tests/e2e/js" && REDIS_KIND=redis-cluster timeout 600 node --test --test-concurrency=1 test/cluster.test.mjs' _ "$ROOT"

  fresh_mongo
  # The chat suites again with chatwire on the MongoDB-wire server.
  run_step "python e2e ($RT, MongoDB store): chatwire REST + chat + crash consistency" \
    env E2E_CHAT_STORE=mongo timeout 600 "$VENV/bin/python" -m pytest -p no:cacheprovider \
      "$ROOT/tests/e2e/python/test_chat_rest.py" "$ROOT/tests/e2e/python/test_chat_socketio.py" \
      "$ROOT/tests/e2e/python/test_crash_consistency.py"

  fresh_mongo
  run_step "js e2e ($RT, MongoDB store): chatwire chat" \
    bash -c 'cd "$1/tests/e2e/js" && E2E_CHAT_STORE=mongo timeout 600 node --test --test-concurrency=1 test/chat.test.mjs' _ "$ROOT"
done

# /docs and /redoc in headless Chromium, every request outside chatwire
# blocked; Swagger UI's "Try it out" registers, logs in, authorizes and reads.
# And the web chat at /app (app.test.mjs): several users in Chromium over
# WebSocket and polling, with and without recovery, on both runtimes.
run_step "browser e2e (tokio): /docs, /redoc and the web chat /app in Chromium" \
  bash -c 'cd "$1/tests/e2e/browser" && CHATWIRE_BIN="$2" timeout 300 node --test --test-concurrency=1 .' \
    _ "$ROOT" "$TARGET_DIR/debug/chatwire"
case " $E2E_RUNTIMES " in
  *" smol "*)
    run_step "browser e2e (smol): the web chat /app in Chromium" \
      bash -c 'cd "$1/tests/e2e/browser" && CHATWIRE_BIN="$2" timeout 300 node --test --test-concurrency=1 app.test.mjs' \
        _ "$ROOT" "$TARGET_DIR/debug/chatwire-smol"
    ;;
esac

# The container image (scripts/container-test.sh: podman, ~50 s cold, ~8 s
# warm; CONTAINER_TEST=0 skips it) around the tokio debug binary.
if [ "${CONTAINER_TEST:-1}" != 0 ]; then
  run_step "container test (scripts/container-test.sh)" \
    env CHATWIRE_BIN="$TARGET_DIR/debug/chatwire" timeout 900 "$ROOT/scripts/container-test.sh"
fi

# Schemathesis (every check) against chatwire on tokio, authenticated, on the
# embedded store: the OpenAPI document and the server must agree. Its own
# venv, reinstalled when tests/schemathesis/requirements.txt changes.
section "schemathesis environment (tests/.venv-schemathesis)"
ST_VENV="$ROOT/tests/.venv-schemathesis"
venv_with "$ST_VENV" "$ROOT/tests/schemathesis/requirements.txt"
run_step "schemathesis (tokio): every check against chatwire's OpenAPI document" \
  env ST="$ST_VENV/bin/st" timeout 600 "$ROOT/tests/schemathesis/run.sh" "$TARGET_DIR/debug/chatwire"

# Fuzz smoke (30 s per target; FUZZ_SMOKE=0 skips it): see fuzz/README.md.
if [ "${FUZZ_SMOKE:-1}" != 0 ] && [ "$E2E_ONLY" -eq 0 ]; then
  run_step "fuzz smoke (fuzz/smoke.sh)" "$ROOT/fuzz/smoke.sh"
fi

section "summary"
for s in "${PASSED[@]}"; do echo "ok      $s"; done
for s in "${FAILED[@]+"${FAILED[@]}"}"; do echo "FAILED  $s"; done
for i in "${!FAILED_LOGS[@]}"; do
  # What failed, first: node's `not ok` blocks and pytest's failure lines,
  # which the tail below may have scrolled past.
  section "what failed in: ${FAILED[$i]}"
  grep -n -E -A30 '^[[:space:]]*not ok|^FAILED |^E  ' "${FAILED_LOGS[$i]}" | head -n 150 || true
  section "the end of the failed step: ${FAILED[$i]} (all of it: ${FAILED_LOGS[$i]})"
  tail -n 60 "${FAILED_LOGS[$i]}"
done
echo "steps: ${#PASSED[@]} passed, ${#FAILED[@]} failed"
[ "${#FAILED[@]}" -eq 0 ]
