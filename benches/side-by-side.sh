#!/usr/bin/env bash
# chatwire and a socketioxide server with the same chat events
# (benches/peer-socketioxide), one after the other, on the same cores
# (server on core 0, loadgen on core 1, through benches/load.sh), for each
# scenario below; prints one line per scenario and round with both
# results and their ratio (chatwire / peer), and appends every raw line
# to $OUT.
#
#   benches/side-by-side.sh            # every scenario, 2 rounds
#   ROUNDS=1 benches/side-by-side.sh fanout200k b2b
#
# Scenarios: fanout50k, fanout100k, fanout200k (1,000 clients, 10
# senders x 5, 10, 20/s), fanout800k (80 x 10/s), b2b (one client,
# chat:send then wait for its Socket.IO ack, back to back), acked (100
# clients, 10 senders each waiting for its Socket.IO ack), conns (10,000
# idle connections opened as fast as they go: connections/s and the
# server's KB per connection), and durable (chatwire alone, on its embedded
# store in a fresh directory under $TMPDIR: 3,000 users in private chats,
# 50 messages in flight; the peer has no durable store, so this row has no
# ratio). Otherwise chatwire runs on DATABASE_URL=memory: with
# both rate limits lifted; the peer keeps its last 10,000 messages and has
# no limits. With SMOL=1 each round also runs chatwire-smol (the same
# server on smol) and prints its ratios to the peer and to chatwire.
#
# Needs, with the same CARGO_TARGET_DIR:
#   cargo build --release -p chatwire -p chatwire-benches
#   (cd benches/peer-socketioxide && cargo build --release)
# The environment reaches the servers: BUSY_POLL_MICROS=100, for one, runs
# chatwire (and chatwire-smol) with its busy poll on (the peer has none);
# each raw label line records it.
# The fanout rows up to 200k/s also run benches/floor/fanout_floor.c (built
# with gcc into the target directory; FLOOR=0 skips it) in the same round:
# a C server that only reads each message and writes it to every
# connection, and a C client that only sends and reads: what a server with
# no work of its own gets on these cores. The line prints its median next
# to half the peer's.
# DURATION (seconds of sending, default 6), ROUNDS (default 2), OUT (default
# benches/results/<UTC date>-side-by-side.jsonl), CHATWIRE_BIN, SMOL_BIN
# and PEER_BIN may be overridden (SMOL=1 needs
# `cargo build --release -p chatwire-smol` too).
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
smol=
if [ "${SMOL:-0}" = 1 ]; then
  smol=${SMOL_BIN:-$bin/chatwire-smol}
  [ -x "$smol" ] || { echo "no chatwire-smol binary at $smol" >&2; exit 1; }
fi
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
    fanout50k) echo "fanout --clients 1000 --senders 10 --rate 5 --duration $d --drain 2" ;;
    fanout100k) echo "fanout --clients 1000 --senders 10 --rate 10 --duration $d --drain 2" ;;
    fanout200k) echo "fanout --clients 1000 --senders 10 --rate 20 --duration $d --drain 2" ;;
    fanout800k) echo "fanout --clients 1000 --senders 80 --rate 10 --duration $d --drain 2" ;;
    b2b) echo "--sio-ack ackrtt --users 1 --duration $d" ;;
    acked) echo "--sio-ack saturate --users 100 --senders 10 --window 10 --duration $d --drain 1" ;;
    conns) echo "conns --clients 10000 --hold 3" ;;
    durable) echo "saturate --private --users 3000 --window 50 --duration $d --drain 1" ;;
    *) echo "unknown scenario $1" >&2; exit 1 ;;
  esac
}

# What a scenario's line shows, from loadgen's JSON ($1) and load.sh's
# server line ($2), as "name value" pairs, ratios taken by name. gen_util
# is the generator's share of its core while it sent (or connected): near
# 1, the latencies are its own queue's as much as the server's.
metrics() {
  jq -rn --argjson l "$1" --argjson s "$2" '
    [["delivered_pct", (if $l.expected_deliveries > 0 then 100 * $l.received / $l.expected_deliveries else null end)],
     ["p50_ms", $l.latency.p50_ms], ["p99_ms", $l.latency.p99_ms],
     ["acks_per_s", $l.acks_per_s], ["ack_p50_ms", $l.ack_latency.p50_ms],
     ["ack_p99_ms", $l.ack_latency.p99_ms], ["ack_max_ms", $l.ack_latency.max_ms],
     ["deliveries_per_s", $l.deliveries_per_s],
     ["connects_per_s", $l.connects_per_s], ["kb_per_conn", $l.server.kb_per_conn?],
     ["cpu_util", $l.usage.server.cpu_util?],
     ["gen_util", (if $l.usage.sending.generator_cpu_util? then $l.usage.sending.generator_cpu_util
                   elif $l.generator_connect_cpu_s? then $l.generator_connect_cpu_s / $l.connect_s else null end)],
     ["vmhwm_mb", ($s.server_vmhwm_kb / 1024)]]
    | map(select(.[1] != null)) | .[] | "\(.[0]) \(.[1])"'
}

# CPU ticks every process on the machine used so far: the label line's
# machine_busy_s minus the server's and loadgen's CPU is what else ran
# beside the run (about 0.3 s is loadgen's connecting).
busy() { awk '/^cpu /{print $2 + $3 + $4 + $7 + $8}' /proc/stat; }

run_one() { # scenario server-binary label
  local line t0
  t0=$(busy)
  local db=memory:
  if [ "$1" = durable ]; then
    db=${TMPDIR:-/tmp}/chatwire-side-by-side-db
    rm -rf "$db"
  fi
  line=$(CHATWIRE_BIN=$2 "$root/benches/load.sh" "$db" $(args "$1"))
  { echo "{\"side_by_side\":\"$1\",\"server\":\"$3\",\"bin\":\"$(basename "$2")\",\"at\":\"$(date -u +%FT%TZ)\",\"busy_poll_micros\":${BUSY_POLL_MICROS:-0},\"machine_busy_s\":$(( $(busy) - t0 ))e-2}"; echo "$line"; } >>"$out"
  echo "$line"
}

floor=
if [ "${FLOOR:-1}" = 1 ] && command -v gcc >/dev/null; then
  floor=$target/fanout-floor
  gcc -O2 -pthread -o "$floor" "$root/benches/floor/fanout_floor.c"
fi
# Messages a second of a fanout row the floor runs (1,000 connections).
floor_rate() {
  case $1 in fanout50k) echo 50 ;; fanout100k) echo 100 ;; fanout200k) echo 200 ;; esac
}
# The floor's line for scenario $1, against chatwire's ($2) and the
# peer's ($3) loadgen lines.
run_floor() {
  local line
  line=$(taskset -c 0,1 "$floor" 1000 "$(floor_rate "$1")" "$d" 10 || true)
  { echo "{\"side_by_side\":\"$1\",\"server\":\"floor\",\"at\":\"$(date -u +%FT%TZ)\"}"; echo "$line"; } >>"$out"
  jq -rn --argjson f "$line" --argjson c "$(sed -n 1p <<<"$2")" --argjson p "$(sed -n 1p <<<"$3")" \
    '"p50_ms \($f.p50_ms) (chatwire x\($c.latency.p50_ms / $f.p50_ms * 100 | round / 100), half the peer'"'"'s \($p.latency.p50_ms / 2 * 1000 | round / 1000))  p99_ms \($f.p99_ms)  delivered \($f.received)/\($f.expected)"'
}

scenarios=("$@")
[ ${#scenarios[@]} -gt 0 ] || scenarios=(fanout50k fanout100k fanout200k fanout800k b2b acked conns durable)
mkdir -p "$(dirname "$out")"
# One line: the metrics of $2 against those of $3 (each a loadgen line and
# load.sh's server line), labelled $1.
compare() {
  local -A a=() b=()
  local k
  while read -r k v; do a[$k]=$v; done < <(metrics "$(sed -n 1p <<<"$2")" "$(sed -n 2p <<<"$2")")
  while read -r k v; do b[$k]=$v; done < <(metrics "$(sed -n 1p <<<"$3")" "$(sed -n 2p <<<"$3")")
  printf '%s:' "$1"
  for k in delivered_pct p50_ms p99_ms acks_per_s ack_p50_ms ack_p99_ms ack_max_ms deliveries_per_s connects_per_s kb_per_conn cpu_util gen_util vmhwm_mb; do
    [ -n "${a[$k]:-}" ] && [ -n "${b[$k]:-}" ] || continue
    printf '  %s %s / %s (%s)' "$k" "$(printf '%.4g' "${a[$k]}")" "$(printf '%.4g' "${b[$k]}")" \
      "$(jq -rn --argjson x "${a[$k]}" --argjson y "${b[$k]}" 'if $y == 0 then "-" else "x\($x / $y * 100 | round / 100)" end')"
  done
  echo
}
for s in "${scenarios[@]}"; do
  for r in $(seq "$rounds"); do
    cw=$(run_one "$s" "$chatwire" chatwire)
    [ -z "$smol" ] || sm=$(run_one "$s" "$smol" chatwire-smol)
    if [ "$s" = durable ]; then
      # No peer to compare with: chatwire's own numbers (and smol's
      # against tokio).
      printf '%-11s round %s, chatwire alone:' "$s" "$r"
      metrics "$(sed -n 1p <<<"$cw")" "$(sed -n 2p <<<"$cw")" | grep -v '^deliveries_per_s' | tr '\n' ' ' | sed 's/ \([a-z]\)/  \1/g'
      echo
      [ -z "$smol" ] || compare "$(printf '%-11s round %s, smol / tokio' "$s" "$r")" "$sm" "$cw"
      continue
    fi
    pr=$(run_one "$s" "$peer" socketioxide)
    compare "$(printf '%-11s round %s' "$s" "$r")" "$cw" "$pr"
    if [ -n "$floor" ] && [ -n "$(floor_rate "$s")" ]; then
      printf '%-11s round %s, floor:  %s\n' "$s" "$r" "$(run_floor "$s" "$cw" "$pr")"
    fi
    if [ -n "$smol" ]; then
      compare "$(printf '%-11s round %s, smol / peer' "$s" "$r")" "$sm" "$pr"
      compare "$(printf '%-11s round %s, smol / tokio' "$s" "$r")" "$sm" "$cw"
    fi
  done
done
echo "(first / second (ratio first/second): chatwire / socketioxide unless the label says; raw lines in $out)"
