#!/usr/bin/env bash
# `make run`: the whole system in the foreground — tether-server with the
# embedded JSON gateway, and one demo agent. Ctrl-C stops everything.
# Uses Redis when TETHER_REDIS is set, the embedded in-memory store otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
GRPC=${TETHER_LISTEN:-127.0.0.1:7070}
HTTP=${TETHER_HTTP:-127.0.0.1:8080}
METRICS=${TETHER_METRICS:-127.0.0.1:9090}
DEVICE=${DEMO_DEVICE_ID:-demo-1}

pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "tether: stopped"
}
trap cleanup INT TERM EXIT

"$BIN/tether-server" --listen "$GRPC" --http "$HTTP" --metrics "$METRICS" &
pids+=($!)
# Wait for the gRPC port before starting the agent (it would retry anyway).
for _ in $(seq 1 50); do
  (exec 3<>"/dev/tcp/${GRPC%:*}/${GRPC##*:}") 2>/dev/null && break
  sleep 0.1
done
# The agent refuses a config file others can write (a checkout under umask
# 002 makes it 0664).
chmod go-w scripts/demo-agent.yaml
"$BIN/tether-agent" --server "$GRPC" --device-id "$DEVICE" --config scripts/demo-agent.yaml &
pids+=($!)

cat <<MSG

  Tether is running ($( [ -n "${TETHER_REDIS:-}" ] && echo "Redis: $TETHER_REDIS" || echo "embedded in-memory registry" )).
    gRPC            $GRPC      (grpcurl -plaintext $GRPC list)
    fleet page      http://$HTTP/
    JSON gateway    http://$HTTP/v1/devices
    OpenAPI         http://$HTTP/openapi.json
    metrics         http://$METRICS/metrics
    demo device     $DEVICE    (curl -s -X POST http://$HTTP/v1/devices/$DEVICE:command -H 'Content-Type: application/json' -d '{"name":"echo","args":["hi"]}')

  Ctrl-C stops everything.

MSG
wait -n "${pids[@]}" || true
