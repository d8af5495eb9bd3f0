#!/usr/bin/env bash
# A long fuzz run measured in CPU time, not wall time: runs one target until
# the fuzzer process has used CPU_SECONDS of CPU (default 3600), so a run on
# a shared machine (builds, benchmarks, a second fuzzer) still gets its full
# share. Stop and resume freely: new inputs accumulate in work/<target>.
#
#   fuzz/campaign.sh <target> [CPU_SECONDS]
#
# The log (libFuzzer's status lines and final stats) goes to
# logs/<target>-<start time>.log; the last line written by this script
# gives the CPU and wall seconds used. Exits non-zero on a crash, a leak or
# a timeout, leaving the input in artifacts/<target>.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
target="${1:?usage: campaign.sh <target> [CPU_SECONDS]}"
budget="${2:-3600}"
export PATH="$(pwd)/.tools/bin:$PATH"
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$(pwd)/target}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked --root .tools

mkdir -p "work/$target" "artifacts/$target" logs
log="logs/$target-$(date -u +%Y%m%dT%H%M%S).log"
cargo fuzz build "$target" >/dev/null 2>&1 || cargo fuzz build "$target"
bin="$CARGO_TARGET_DIR/x86_64-unknown-linux-gnu/release/$target"

# In-process libFuzzer (no -jobs), so the pid we watch is the fuzzer itself.
# The wall-clock cap is only a backstop against a stalled machine.
# SCHED_IDLE: the fuzzer only gets CPU that nothing else wants, so builds
# and benchmarks beside it run as if it were not there. (Do not SIGSTOP a
# fuzzer instead: libFuzzer's -timeout is wall-clock, and a pause longer
# than it is reported as a hang.)
chrt --idle 0 "$bin" "work/$target" "corpus/$target" -artifact_prefix="artifacts/$target/" \
  -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
  -max_total_time=$((budget * 4)) >"$log" 2>&1 &
pid=$!
trap 'kill -INT "$pid" 2>/dev/null || true' INT TERM
start=$SECONDS
tick="$(getconf CLK_TCK)"
cpu=0
while kill -0 "$pid" 2>/dev/null; do
  # utime + stime, fields 14 and 15 of /proc/<pid>/stat (the command name
  # in field 2 has no spaces here).
  if stat="$(cat "/proc/$pid/stat" 2>/dev/null)"; then
    cpu=$(echo "$stat" | awk -v t="$tick" '{ print int(($14 + $15) / t) }')
  fi
  if [ "$cpu" -ge "$budget" ]; then
    kill -INT "$pid" 2>/dev/null || true
    break
  fi
  sleep 5
done
status=0
wait "$pid" || status=$?
echo "campaign: $target cpu_seconds=$cpu wall_seconds=$((SECONDS - start)) exit=$status" | tee -a "$log"
# libFuzzer exits 0 on its own time limit; on SIGINT it exits 72 after
# printing its final stats. Anything else is a finding.
grep -qE 'ERROR: (libFuzzer|AddressSanitizer|LeakSanitizer)|panicked at' "$log" && exit 1
[ "$status" -eq 0 ] || [ "$status" -eq 72 ] || [ "$status" -eq 130 ] || exit 1
