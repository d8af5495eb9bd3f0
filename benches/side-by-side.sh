#!/usr/bin/env bash
# chatwire and a socketioxide server with the same chat events
# (benches/peer-socketioxide), one after the other, on the same cores
# (server on core 0, loadgen on core 1, through benches/load.sh), for each
# scenario of issue 20; prints one line per scenario and round with both
# results and their ratio (chatwire / peer), and appends every raw line
# to $OUT.
#
#   benches/side-by-side.sh            # every scenario, 2 rounds
#   ROUNDS=1 benches/side-by-side.sh fanout200k b2b
#
# Scenarios: fanout200k (1,000 clients, 10 senders x 20/s), fanout800k
# (80 x 10/s), b2b (one client, chat:send then wait for its Socket.IO ack,
# back to back), acked (100 clients, 10 senders each waiting for its
# Socket.IO ack). chatwire runs on DATABASE_URL=memory: with both rate
# limits lifted; the peer keeps its last 10,000 messages and has no limits.
#
# Needs, with the same CARGO_TARGET_DIR:
#   cargo build --release -p chatwire -p chatwire-benches
#   (cd benches/peer-socketioxide && cargo build --release)
# DURATION (seconds of sending, default 6), ROUNDS (default 2), OUT (default
# benches/results/<UTC date>-side-by-side.jsonl), CHATWIRE_BIN and PEER_BIN
# may be overridden.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target=${CARGO_TARGET_DIR:-$root/target}
bin=$target/${BUILD_PROFILE:-release}
chatwire=${CHATWIRE_BIN:-$bin/chatwire}
peer=${PEER_BIN:-}
if [ -z "$peer" ]; then
  for p in "$bin/peer-socketioxide" "$root/benches/peer-socketioxide/target/${BUILD_PROFILE:-release}/peer-socketioxide"; do
    [ -x "$p" ] && peer=$p && break
  done
fi
[ -x "$chatwire" ] || { echo "no chatwire binary at $chatwire" >&2; exit 1; }
[ -x "${peer:-}" ] || { echo "no peer binary: build benches/peer-socketioxide (see the header)" >&2; exit 1; }
d=${DURATION:-6}
rounds=${ROUNDS:-2}
out=${OUT:-$root/benches/results/$(date -u +%F)-side-by-side.jsonl}
ulimit -n 20000 2>/dev/null || true
# Both limits lifted (per user and per socket).
export RATE_LIMIT_PER_SECOND=1000000 RATE_LIMIT_BURST=1000000
export EVENT_RATE_LIMIT_PER_SECOND=1000000 EVENT_RATE_LIMIT_BURST=1000000

args() {
  case $1 in
    fanout200k) echo "fanout --clients 1000 --senders 10 --rate 20 --duration $d --drain 2" ;;
    fanout800k) echo "fanout --clients 1000 --senders 80 --rate 10 --duration $d --drain 2" ;;
    b2b) echo "--sio-ack ackrtt --users 1 --duration $d" ;;
    acked) echo "--sio-ack saturate --users 100 --senders 10 --window 10 --duration $d --drain 1" ;;
    *) echo "unknown scenario $1" >&2; exit 1 ;;
  esac
}

# What a scenario's line shows, from loadgen's JSON ($1) and load.sh's
# server line ($2), as "name value" pairs, ratios taken by name.
metrics() {
  jq -rn --argjson l "$1" --argjson s "$2" '
    [["delivered_pct", (if $l.expected_deliveries > 0 then 100 * $l.received / $l.expected_deliveries else null end)],
     ["p50_ms", $l.latency.p50_ms], ["p99_ms", $l.latency.p99_ms],
     ["acks_per_s", $l.acks_per_s], ["ack_p50_ms", $l.ack_latency.p50_ms],
     ["ack_p99_ms", $l.ack_latency.p99_ms], ["ack_max_ms", $l.ack_latency.max_ms],
     ["deliveries_per_s", $l.deliveries_per_s],
     ["cpu_util", $l.usage.server.cpu_util], ["vmhwm_mb", ($s.server_vmhwm_kb / 1024)]]
    | map(select(.[1] != null)) | .[] | "\(.[0]) \(.[1])"'
}

# CPU ticks every process on the machine used so far: the label line's
# machine_busy_s minus the server's and loadgen's CPU is what else ran
# beside the run (about 0.3 s is loadgen's connecting).
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

run_one() { # scenario server-binary label
  local line t0
  t0=$(busy)
  line=$(CHATWIRE_BIN=$2 "$root/benches/load.sh" memory: $(args "$1"))
  { echo "{\"side_by_side\":\"$1\",\"server\":\"$3\",\"bin\":\"$(basename "$2")\",\"at\":\"$(date -u +%FT%TZ)\",\"machine_busy_s\":$(( $(busy) - t0 ))e-2}"; echo "$line"; } >>"$out"
  echo "$line"
}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(fanout200k fanout800k b2b acked)
mkdir -p "$(dirname "$out")"
for s in "${scenarios[@]}"; do
  for r in $(seq "$rounds"); do
    cw=$(run_one "$s" "$chatwire" chatwire)
    pr=$(run_one "$s" "$peer" socketioxide)
    declare -A a=() b=()
    while read -r k v; do a[$k]=$v; done < <(metrics "$(sed -n 1p <<<"$cw")" "$(sed -n 2p <<<"$cw")")
    while read -r k v; do b[$k]=$v; done < <(metrics "$(sed -n 1p <<<"$pr")" "$(sed -n 2p <<<"$pr")")
    printf '%-11s round %s:' "$s" "$r"
    for k in delivered_pct p50_ms p99_ms acks_per_s ack_p99_ms ack_max_ms deliveries_per_s cpu_util vmhwm_mb; do
      [ -n "${a[$k]:-}" ] && [ -n "${b[$k]:-}" ] || continue
      printf '  %s %s / %s (%s)' "$k" "$(printf '%.4g' "${a[$k]}")" "$(printf '%.4g' "${b[$k]}")" \
        "$(jq -rn --argjson x "${a[$k]}" --argjson y "${b[$k]}" 'if $y == 0 then "-" else "x\($x / $y * 100 | round / 100)" end')"
    done
    echo
    unset a b
  done
done
echo "(chatwire / socketioxide, ratio chatwire/socketioxide; raw lines in $out)"
