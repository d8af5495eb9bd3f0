#!/usr/bin/env bash
# One loadgen scenario against N chatwire instances of a cluster (N = 0:
# one instance without Redis, the baseline), every instance and
# redis-server pinned to core 0, the generator to core 1, the clients
# spread round-robin over the instances. Prints loadgen's JSON line, then
# one line with the instances' CPU time (user + system, all of them),
# redis-server's, and what Redis did in the run: the XADD and XREAD calls,
# the calls of every command called (`redis_calls`, from INFO commandstats;
# a script's own commands, such as its HMGET and XADD, count there too),
# the calls that failed (`redis_failed_calls`: an EVALSHA of a script Redis
# does not hold yet is one, and the client then sends EVAL), and the bytes
# Redis received from and sent to all its clients (INFO stats).
#
#   MONGODB_URL=mongodb://127.0.0.1:27017 benches/cluster.sh 2 fanout --clients 1000 --senders 10 --rate 20
#
# ONE_ADDR=1: loadgen gets the first instance's address only, so every
# client (and every member of the chat) is on instance 1 while all N run;
# the others only read the stream. FIRST_ADDRS=k: the first k instances'
# addresses (ONE_ADDR=1 is FIRST_ADDRS=1), the members on k of the N.
#
# Needs `cargo build --release -p chatwire -p chatwire-benches`, Debian's
# redis-server (and redis-cli), and a MongoDB-wire server at MONGODB_URL
# (each run uses a fresh database on it): a cluster's instances share a
# MongoDB store, and the baseline uses the same one.
set -euo pipefail
n=$1
shift
root=$(cd "$(dirname "$0")/.." && pwd)
bin=${CARGO_TARGET_DIR:-$root/target}/${BUILD_PROFILE:-release}
base_port=${PORT:-3917}
redis_port=$((base_port + 100))
export JWT_SECRET=${JWT_SECRET:-bench-secret-bench-secret-bench-secret-0123}
db="${MONGODB_URL:?set MONGODB_URL}/bench_$$_$n"
pids=()
cleanup() {
  kill "${pids[@]}" 2>/dev/null || true
  wait "${pids[@]}" 2>/dev/null || true
}
trap cleanup EXIT

wait_port() {
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

redis_env=()
if [ "$n" -gt 0 ]; then
  taskset -c 0 redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
    >/tmp/chatwire-cluster-redis.log 2>&1 &
  redis_pid=$!
  pids+=("$redis_pid")
  for _ in $(seq 100); do
    [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && break
    sleep 0.1
  done
  redis_env=(REDIS_URL="redis://127.0.0.1:$redis_port")
fi
addrs=()
servers=()
for i in $(seq 1 "$(( n > 0 ? n : 1 ))"); do
  port=$((base_port + i))
  env "${redis_env[@]}" DATABASE_URL="$db" RUST_LOG=warn PORT=$port \
    taskset -c 0 "${CHATWIRE_BIN:-$bin/chatwire}" >/tmp/chatwire-cluster-$port.log 2>&1 &
  servers+=("$!")
  pids+=("$!")
  addrs+=("127.0.0.1:$port")
done
for a in "${addrs[@]}"; do wait_port "${a#*:}"; done
[ "$n" -gt 0 ] && redis-cli -p "$redis_port" CONFIG RESETSTAT >/dev/null

one_addr=${ONE_ADDR:-0}
k=${FIRST_ADDRS:-${#addrs[@]}}
[ "$one_addr" = 1 ] && k=1
taskset -c 1 "$bin/loadgen" --addr "$(IFS=,; echo "${addrs[*]:0:k}")" "$@"

ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
total=0
for p in "${servers[@]}"; do total=$((total + $(ticks "$p"))); done
if [ "$n" -gt 0 ]; then
  # One INFO for both sections, so that the byte counts stop before its
  # own reply (which is counted only once written).
  stats=$(redis-cli -p "$redis_port" INFO stats commandstats | tr -d '\r')
  calls() {
    local c
    c=$(echo "$stats" | sed -n "s/^cmdstat_$1:calls=\([0-9]*\).*/\1/p" | head -1)
    echo "${c:-0}"
  }
  # {"command":calls,...} for every cmdstat_<command> line (subcommands
  # as "xinfo|stream"), and for failed_calls the non-zero ones.
  all_calls=$(echo "$stats" | sed -n 's/^cmdstat_\([^:]*\):calls=\([0-9]*\).*/"\1":\2/p' | paste -sd, -)
  failed=$(echo "$stats" | sed -n 's/^cmdstat_\([^:]*\):.*failed_calls=\([1-9][0-9]*\).*/"\1":\2/p' | paste -sd, -)
  field() { echo "$stats" | sed -n "s/^$1:\([0-9]*\)$/\1/p"; }
  echo "{\"instances\":$n,\"one_addr\":$([ "$k" = 1 ] && echo true || echo false),\"client_instances\":$k,\"instances_cpu_s\":${total}e-2,\"redis_cpu_s\":$(ticks "$redis_pid")e-2,\"redis_xadd\":$(calls xadd),\"redis_xread\":$(calls xread),\"redis_calls\":{$all_calls},\"redis_failed_calls\":{$failed},\"redis_net_input_bytes\":$(field total_net_input_bytes),\"redis_net_output_bytes\":$(field total_net_output_bytes)}"
else
  echo "{\"instances\":1,\"redis\":false,\"instances_cpu_s\":${total}e-2}"
fi
