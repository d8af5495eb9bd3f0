#!/usr/bin/env bash
# The one test command: builds the workspace once (debug), runs the Rust
# tests, then the end-to-end suites (python-socketio, raw protocol,
# socket.io-client) against the binaries of that build.
#
# Usage: scripts/test.sh [--e2e-only]
#   --e2e-only   skip the cargo build and cargo test (the binaries must exist)
#
# Needs: the Rust toolchain, Python 3.11 + pip, Node 20 + npm.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT="$(pwd)"

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
PASSED=()
run_step() {
  local name="$1"
  shift
  section "$name"
  if "$@"; then
    PASSED+=("$name")
  else
    echo "!!! $name FAILED (exit $?)"
    FAILED+=("$name")
  fi
}

TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET_DIR" in /*) ;; *) TARGET_DIR="$ROOT/$TARGET_DIR" ;; esac

if [ "$E2E_ONLY" -eq 0 ]; then
  section "cargo build --workspace --all-targets --locked"
  # a failed build stops everything: nothing else can run
  cargo build --workspace --all-targets --locked

  run_step "cargo test --workspace --locked" cargo test --workspace --locked
fi

export CONFORMANCE_BIN="${CONFORMANCE_BIN:-$TARGET_DIR/debug/examples/conformance}"
export CHATWIRE_BIN="${CHATWIRE_BIN:-$TARGET_DIR/debug/chatwire}"
if [ ! -x "$CONFORMANCE_BIN" ]; then
  echo "conformance binary missing: $CONFORMANCE_BIN" >&2
  exit 1
fi
echo "CONFORMANCE_BIN=$CONFORMANCE_BIN"

section "python e2e environment (tests/.venv)"
VENV="$ROOT/tests/.venv"
REQS="$ROOT/tests/e2e/python/requirements.txt"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
STAMP="$VENV/.requirements.sha256"
WANT="$(sha256sum "$REQS" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null || true)" != "$WANT" ]; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQS"
  echo "$WANT" >"$STAMP"
else
  echo "requirements unchanged, pip install skipped"
fi

section "js e2e environment (npm ci)"
(cd "$ROOT/tests/e2e/js" && npm ci --no-audit --no-fund --loglevel=error)

# Every e2e run is bounded: a hung server must fail the run, not stall it.
run_step "python e2e: raw protocol + python-socketio" \
  timeout 600 "$VENV/bin/python" -m pytest -p no:cacheprovider "$ROOT/tests/e2e/python"

run_step "js e2e: socket.io-client" \
  bash -c 'cd "$1/tests/e2e/js" && timeout 600 node --test --test-concurrency=1 test/' _ "$ROOT"

# Fuzz smoke (30 s per target; FUZZ_SMOKE=0 skips it): see fuzz/README.md.
if [ "${FUZZ_SMOKE:-1}" != 0 ] && [ "$E2E_ONLY" -eq 0 ]; then
  run_step "fuzz smoke (fuzz/smoke.sh)" "$ROOT/fuzz/smoke.sh"
fi

section "summary"
for s in "${PASSED[@]}"; do echo "ok      $s"; done
for s in "${FAILED[@]+"${FAILED[@]}"}"; do echo "FAILED  $s"; done
echo "steps: ${#PASSED[@]} passed, ${#FAILED[@]} failed"
[ "${#FAILED[@]}" -eq 0 ]
