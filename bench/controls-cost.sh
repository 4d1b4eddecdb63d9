#!/bin/bash
# Per-request cost of the SPEC §13 viewer controls: FileProxy with a Redis store and a
# file:// origin (sample media), wrk on the four segments of one admitted video,
# limits off vs on, interleaved. Usage: run.sh BIN ROUNDS DURATION_S
set -euo pipefail
BIN=${1:?binary}; ROUNDS=${2:-2}; DUR=${3:-10}
ROOT=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d)
RPORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no >/dev/null 2>&1 &
RPID=$!
trap 'kill $RPID 2>/dev/null; [ -n "${FPID:-}" ] && kill $FPID 2>/dev/null; rm -rf "$WORK"' EXIT
sleep 0.5
MEDIA=$(cd "$ROOT/../sample-media" && pwd)
run_one() {
  local label=$1 limits=$2
  local port; port=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
  cat > "$WORK/$label.toml" <<TOML
[server]
listen = "127.0.0.1:$port"
[origin]
url = "file://$MEDIA"
[store]
url = "redis://127.0.0.1:$RPORT/0"
[auth]
secret = "bench-secret-0123456789"
whitelist_api_key = "bench-key"
[limits]
$limits
[log]
level = "warn"
access_log = "off"
TOML
  "$BIN" serve --config "$WORK/$label.toml" 2>"$WORK/$label.log" & FPID=$!
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$port/health" && break; sleep 0.1; done
  curl -s -o /dev/null -X POST "http://127.0.0.1:$port/api/whitelist" -H 'Authorization: Bearer bench-key' \
    -H 'Content-Type: application/json' \
    -d '{"uid":"bench","path":"/media/demo/index.m3u8","clientIp":"127.0.0.1","UserAgent":"bench-ua"}'
  local paths="/media/demo/seg0.ts /media/demo/seg1.ts /media/demo/seg2.ts /media/demo/seg3.ts"
  local code; code=$(curl -s -o /dev/null -w '%{http_code}' -A bench-ua "http://127.0.0.1:$port/media/demo/seg0.ts")
  [ "$code" = 200 ] || { echo "$label: segment answered $code"; cat "$WORK/$label.log"; exit 1; }
  FPB_PATHS="$paths" FPB_UA=bench-ua wrk -t2 -c64 -d"${DUR}s" --latency -s "$ROOT/load/segments.lua" \
    "http://127.0.0.1:$port/media/demo/seg0.ts" | grep FPB_JSON | sed "s/^FPB_JSON /$label /"
  kill $FPID; wait $FPID 2>/dev/null || true; FPID=
}
OFF=""
ON=$'max_streams_per_uid = 100000\nuid_quota_bytes = 1000000000000000'
for r in $(seq "$ROUNDS"); do
  run_one off "$OFF"
  run_one on "$ON"
done
