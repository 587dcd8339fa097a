#!/bin/bash
# Saturated command throughput with 10,000 held sessions, against the naive
# floor or tether-server (docs/PERFORMANCE.md): the floors scenario's
# saturated phase alone. Usage:
#   bench/scripts/commands.sh floor BIN
#   bench/scripts/commands.sh tether BIN [tether-server flags…]
# BIN holds tether-server, tether-loadgen and bench (go build -o BIN/bench ./bench).
set -euo pipefail
kind=$1; B=$2; shift 2
port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }
G=127.0.0.1:$(port); M=127.0.0.1:$(port); H=127.0.0.1:$(port)
log=$(mktemp -d)
if [ "$kind" = floor ]; then
  "$B/bench" -floor "$G" -floor-metrics "$M" -floor-ping 10s >"$log/server.log" 2>&1 & SP=$!
else
  "$B/tether-server" --listen "$G" --http "$H" --metrics "$M" --node cmd --log-level warn "$@" >"$log/server.log" 2>&1 & SP=$!
fi
trap 'kill ${LP:-} $SP 2>/dev/null; wait 2>/dev/null; rm -rf "$log"' EXIT
sleep 1
"$B/tether-loadgen" --server "$G" --devices 10000 --id-prefix held- --ramp 3000/s --source-ips 127.0.0.2-127.0.0.61 --report-every 0 >"$log/loadgen.log" 2>&1 & LP=$!
sleep 25
"$B/tether-loadgen" --server "$G" --devices 100 --id-prefix c- --json --duration 15s --report-every 0 --warmup 5s \
  --commands-via "$G" --commands-rate 20000/s --commands-concurrency 256 >"$log/cmd.json" 2>"$log/cmd.log"
python3 -c "
import json,sys; r=json.load(open(sys.argv[1]))['commands']
print('$kind: %d ok/s, p99 %.1f ms' % (r['ok']/r['window_seconds'], r['latency_ms']['p99']))" "$log/cmd.json"
