#!/usr/bin/env bash
# CI smoke run of the fuzz targets: installs cargo-fuzz into fuzz/.tools if
# missing, builds every target, runs each for FUZZ_SECONDS (default 30) on
# the committed seed corpus, and fails on the first crash.
#
# Works on stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz use the nightly
# flags it needs (-Zsanitizer=address). New inputs go to fuzz/work/<target>
# (ignored by git), so the committed seeds stay as they are.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
FUZZ="$(pwd)"
SECONDS_PER_TARGET="${FUZZ_SECONDS:-30}"
TOOLS="$FUZZ/.tools"
export PATH="$TOOLS/bin:$PATH"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$FUZZ/target}"

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked --root "$TOOLS"
fi

cargo fuzz build
failed=()
for target in $(cargo fuzz list); do
  echo "=== $target: ${SECONDS_PER_TARGET}s"
  mkdir -p "work/$target" "artifacts/$target"
  rm -f fuzz-0.log
  before="$(ls "artifacts/$target" | wc -l)"
  # -jobs/-workers 1: one core per fuzzer, the machine is shared; libFuzzer
  # then logs to fuzz-0.log. -timeout turns a hang into a failure.
  status=0
  cargo fuzz run "$target" "work/$target" "corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
    -jobs=1 -workers=1 -print_final_stats=1 || status=$?
  [ -f fuzz-0.log ] && grep -E '^(#[0-9]+ +DONE|stat::)' fuzz-0.log || true
  after="$(ls "artifacts/$target" | wc -l)"
  if [ "$status" -ne 0 ] || [ "$after" -ne "$before" ] ||
    grep -qE 'ERROR: libFuzzer|panicked at' fuzz-0.log 2>/dev/null; then
    [ -f fuzz-0.log ] && tail -n 60 fuzz-0.log
    echo "!!! $target failed; see fuzz/artifacts/$target"
    failed+=("$target")
  fi
done
if [ "${#failed[@]}" -ne 0 ]; then
  echo "fuzz smoke: crashes in ${failed[*]}"
  exit 1
fi
echo "fuzz smoke: every target ran ${SECONDS_PER_TARGET}s without a crash"
