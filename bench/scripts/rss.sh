#!/bin/bash
# RSS per held session of one tether-server, optionally after one listing of
# every online device through the JSON API (docs/PERFORMANCE.md, "the listing
# in the bench"). Usage:
#   bench/scripts/rss.sh BIN [list] [tether-server flags…]
# BIN holds tether-server and tether-loadgen (go build -trimpath -o BIN/ ./cmd/...).
set -euo pipefail
B=$1; shift
list=no; if [ "${1:-}" = list ]; then list=yes; shift; fi
N=${N:-10000}
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
G=127.0.0.1:$(port); M=127.0.0.1:$(port); H=127.0.0.1:$(port)
log=$(mktemp -d)
"$B/tether-server" --listen "$G" --http "$H" --metrics "$M" --node rss --log-level warn "$@" >"$log/server.log" 2>&1 & SP=$!
trap 'kill ${LP:-} $SP 2>/dev/null; wait 2>/dev/null; rm -rf "$log"' EXIT
sleep 1
m() { curl -s "$M/metrics" | awk -v m="$1" '$1==m{printf "%d", $2}'; }
rss0=$(awk '/VmRSS/{print $2}' /proc/$SP/status); h0=$(m go_memstats_heap_inuse_bytes); s0=$(m go_memstats_stack_inuse_bytes)
"$B/tether-loadgen" --server "$G" --devices "$N" --id-prefix rss- --ramp 3000/s --source-ips 127.0.0.2-127.0.0.61 --report-every 0 >"$log/loadgen.log" 2>&1 & LP=$!
sleep 15
if [ $list = yes ]; then
  tok=
  for _ in $(seq 1000); do
    r=$(curl -s "http://$H/v1/devices?presence=PRESENCE_FILTER_ONLINE&page_size=1000&page_token=$tok")
    tok=$(printf '%s' "$r" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("nextPageToken",""))')
    [ -z "$tok" ] && break
  done
fi
sleep 45
rss1=$(awk '/VmRSS/{print $2}' /proc/$SP/status); h1=$(m go_memstats_heap_inuse_bytes); s1=$(m go_memstats_stack_inuse_bytes)
n=$(curl -s "$M/metrics" | awk '/^tether_sessions/{s+=$2} END{print s+0}')
awk -v n="$n" -v r=$((rss1-rss0)) -v h=$((h1-h0)) -v s=$((s1-s0)) -v l=$list 'BEGIN{printf "listing %s: %d sessions, RSS %.1f KB, heap in use %.1f KB, stacks %.1f KB per session\n", l, n, r*1024/n/1000, h/n/1000, s/n/1000}'
