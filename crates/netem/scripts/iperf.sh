#!/usr/bin/env bash
# One iperf3 run through `netem up`, printing one line of results.
#
#   crates/netem/scripts/iperf.sh [-R] [-P N] [-t SECONDS] -- NETEM_UP_ARGS...
#
# -R: the server (servers' namespace) sends, like a video origin/proxy; default: client sends.
# Prints: iperf3 receiver Mbit/s, sender retransmits, relay CPU % (utime+stime from
# /proc/<pid>/stat over the iperf3 run), and netem's own counters. Needs root and iperf3.
set -euo pipefail
REVERSE=""; STREAMS=1; DUR=20
while [[ $# -gt 0 ]]; do
  case "$1" in
    -R) REVERSE="-R"; shift ;;
    -P) STREAMS="$2"; shift 2 ;;
    -t) DUR="$2"; shift 2 ;;
    --) shift; break ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
BIN=${NETEM_BIN:-target/release/netem}
CNS=${CNS:-nbc}; SNS=${SNS:-nbs}
tmp=$(mktemp -d)
"$BIN" up --clients-ns "$CNS" --servers-ns "$SNS" --client-addr 10.77.0.1 --server-addr 10.77.0.2 \
  --ready-file "$tmp/ready" --stats-json "$tmp/stats.json" "$@" 2>"$tmp/netem.log" &
NETEM=$!
cleanup() {
  kill -TERM "$NETEM" 2>/dev/null || true
  wait "$NETEM" 2>/dev/null || true
  [[ -n "${IPERF_S:-}" ]] && kill "$IPERF_S" 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
for _ in $(seq 200); do [[ -f "$tmp/ready" ]] && break; sleep 0.05; done
[[ -f "$tmp/ready" ]] || { cat "$tmp/netem.log" >&2; exit 1; }
ip netns exec "$SNS" iperf3 -s -1 -B 10.77.0.2 >/dev/null 2>&1 &
IPERF_S=$!
sleep 0.5
ticks() { awk '{print $14 + $15}' "/proc/$NETEM/stat"; }
t0=$(ticks); w0=$(date +%s.%N)
ip netns exec "$CNS" iperf3 -c 10.77.0.2 -t "$DUR" -P "$STREAMS" $REVERSE -J >"$tmp/iperf.json"
t1=$(ticks); w1=$(date +%s.%N)
kill -TERM "$NETEM"; wait "$NETEM" || true
python3 - "$tmp/iperf.json" "$tmp/stats.json" "$t0" "$t1" "$w0" "$w1" "$(getconf CLK_TCK)" <<'PY'
import json, sys
ip = json.load(open(sys.argv[1])); st = json.load(open(sys.argv[2]))
t0, t1, w0, w1, hz = map(float, sys.argv[3:8])
end = ip["end"]
rx = end["sum_received"]["bits_per_second"] / 1e6
retr = end["sum_sent"].get("retransmits", 0)
cpu = 100 * (t1 - t0) / hz / (w1 - w0)
cc = end.get("sender_tcp_congestion", "?")
def d(k):
    s = st[k]
    return (f"{k}: rx {s['rx_packets']} relayed {s['relayed_packets']} loss {s['dropped_loss']} "
            f"queue {s['dropped_queue']} write {s['dropped_write']} late_max {s['late_us_max']}us")
print(f"receiver {rx:.2f} Mbit/s  sender cc {cc}  retransmits {retr}  relay CPU {cpu:.0f}%  "
      f"| {d('up')} | {d('down')} | tun drops c={st['client_tun_tx_dropped']} s={st['server_tun_tx_dropped']}")
PY
