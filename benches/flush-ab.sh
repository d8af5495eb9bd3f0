#!/usr/bin/env bash
# Fanout at several offered rates with two server builds, alternated
# (A B A B at each rate), through benches/load.sh: the before/after runs of
# a change to the driver's write path. Rate limits lifted. Appends every
# raw line to $OUT and prints one summary line per run.
#
#   benches/flush-ab.sh target/bench/bins/chatwire-before target/bench/bins/chatwire-after
#
# RATES (sender x rate/s pairs, default "10x5 10x10 10x20 80x10": 50k,
# 100k, 200k and 800k deliveries/s with 1,000 clients), DURATION (default
# 6), ROUNDS (default 2), OUT.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
a=$1 b=$2
out=${OUT:-$root/benches/results/$(date -u +%F)-flusher.jsonl}
ulimit -n 20000 2>/dev/null || true
export RATE_LIMIT_PER_SECOND=1000000 RATE_LIMIT_BURST=1000000
export EVENT_RATE_LIMIT_PER_SECOND=1000000 EVENT_RATE_LIMIT_BURST=1000000
# CPU time (ticks) every process on the machine used so far: others_s is
# what the run's server and generator did not use of it (loadgen's connects,
# ~0.3 s, and anything else that ran beside: a run with others_s well above
# that was disturbed).
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }
for pair in ${RATES:-10x5 10x10 10x20 80x10}; do
  senders=${pair%x*} rate=${pair#*x}
  for r in $(seq "${ROUNDS:-2}"); do
    for build in "$a" "$b"; do
      t0=$(busy)
      line=$(CHATWIRE_BIN=$build "$root/benches/load.sh" memory: fanout --clients 1000 --senders "$senders" --rate "$rate" --duration "${DURATION:-6}" --drain 2)
      machine=$(( $(busy) - t0 ))
      { echo "{\"build\":\"$(basename "$build")\",\"at\":\"$(date -u +%FT%TZ)\",\"machine_busy_s\":${machine}e-2}"; echo "$line"; } >>"$out"
      jq -rc --arg b "$(basename "$build")" --arg r "$r" --arg m "$machine" '"\(.offered_deliveries_per_s) \($b) round \($r): delivered \(100 * .received / .expected_deliveries | floor)% p50 \(.latency.p50_ms) p99 \(.latency.p99_ms) cpu_util \(.usage.server.cpu_util * 100 | round)% gen_cpu \(.usage.generator_cpu_s * 100 | round / 100) others_s \(($m | tonumber) / 100 - $s.server_total_cpu_s - .usage.generator_cpu_s | . * 10 | round / 10)"' --argjson s "$(sed -n 2p <<<"$line")" <<<"$(sed -n 1p <<<"$line")"
    done
  done
done
