#!/usr/bin/env bash
# The numbers in crates/netem/README.md: the relay's ceiling, then CUBIC vs BBR on two
# lossy long links. Run from the workspace root as root, after
# `cargo build -p netem --release` and `apt-get install -y iperf3`.
set -euo pipefail
cd "$(dirname "$0")/../../.."
RUNS=${RUNS:-3}
S=crates/netem/scripts/iperf.sh
echo "== ceiling: no delay/loss, rate cap 100 Gbit/s, client sends, 20 s"
for cc in cubic bbr; do
  for r in $(seq "$RUNS"); do
    echo -n "$cc run $r: "; uptime | sed 's/.*load average: //' | tr -d '\n'; echo -n " | "
    $S -t 20 -- --rate-mbit 100000 --cc "$cc"
  done
done
echo "== 10 Mbit/s, 200 ms RTT, 1 % loss each way; server sends (-R), 30 s"
for cc in cubic bbr; do
  for r in $(seq "$RUNS"); do
    echo -n "$cc run $r: "
    $S -R -t 30 -- --rate-mbit 10 --delay-ms 100 --loss 1 --cc-server "$cc" --seed "$r"
  done
done
echo "== 1 Mbit/s, 400 ms RTT, 5 % loss each way; server sends (-R), 60 s"
for cc in cubic bbr; do
  for r in $(seq "$RUNS"); do
    echo -n "$cc run $r: "
    $S -R -t 60 -- --rate-mbit 1 --delay-ms 200 --loss 5 --cc-server "$cc" --seed "$r"
  done
done
