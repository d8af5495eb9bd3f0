#!/usr/bin/env bash
# Runs one loadgen scenario against a fresh release server pinned to core 0,
# the generator pinned to core 1, and prints loadgen's JSON line followed by
# the server's CPU time (user and system) and peak RSS (VmHWM) over its whole life.
#
#   benches/load.sh memory: fanout --clients 1000 --senders 10 --rate 20
#   benches/load.sh /tmp/chatwire-db saturate --private --users 3000 --window 50
#
# Needs `cargo build --release -p chatwire -p chatwire-benches` first; for a
# profile (callgrind, perf) build with `--profile profiling` (release with
# line tables) and set BUILD_PROFILE=profiling.
# PORT (default 3917), JWT_SECRET, BUILD_PROFILE (default release: the
# binaries in target/$BUILD_PROFILE), CHATWIRE_BIN (the server binary) and
# LOADGEN_BIN (the generator) may be overridden.
set -euo pipefail
db=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/${BUILD_PROFILE:-release}
port=${PORT:-3917}
export JWT_SECRET=${JWT_SECRET:-bench-secret-bench-secret-bench-secret-0123}
DATABASE_URL=$db RUST_LOG=warn PORT=$port taskset -c 0 "${CHATWIRE_BIN:-$bin/chatwire}" >/tmp/chatwire-load-$port.log 2>&1 &
pid=$!
# Wait for it to exit, so that the next run's server gets the port.
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 50); do
  (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
  sleep 0.1
done
taskset -c 1 "${LOADGEN_BIN:-$bin/loadgen}" --addr 127.0.0.1:$port --server-pid $pid "$@"
# utime + stime (clock ticks) and the peak RSS over the server's life.
read -r -a stat < <(sed 's/.*) //' /proc/$pid/stat)
# utime is user space, stime the kernel (syscalls, and the loopback TCP
# work they do for the receiving side too); the write and read calls are
# the server's syscalls of each kind (/proc/<pid>/io syscw and syscr).
echo "{\"server_total_cpu_s\":$(( (stat[11] + stat[12]) ))e-2,\"server_user_s\":${stat[11]}e-2,\"server_sys_s\":${stat[12]}e-2,\"server_vmhwm_kb\":$(awk '/VmHWM/{print $2}' /proc/$pid/status),\"server_write_calls\":$(awk '/syscw/{print $2}' /proc/$pid/io),\"server_read_calls\":$(awk '/syscr/{print $2}' /proc/$pid/io)}"
