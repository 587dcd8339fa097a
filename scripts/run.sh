#!/usr/bin/env bash
# `make run`: the whole system in the foreground — tether-server with the
# embedded JSON gateway, and one demo agent. Ctrl-C stops everything.
# Uses Redis when TETHER_REDIS is set, the embedded in-memory store otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
GRPC=${TETHER_LISTEN:-127.0.0.1:7070}
HTTP=${TETHER_HTTP:-127.0.0.1:8080}
METRICS=${TETHER_METRICS:-127.0.0.1:7075}
DEVICE=${DEMO_DEVICE_ID:-demo-1}

# Refuse to start next to something already listening (another `make run`,
# most often): its ports would make this server fail, and this demo agent
# would take the first instance's device over.
for addr in "$GRPC" "$HTTP" "$METRICS"; do
  if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
    echo "tether: $addr is already in use (another 'make run'?); stop it or set TETHER_LISTEN, TETHER_HTTP, TETHER_METRICS" >&2
    exit 1
  fi
done

pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  echo "tether: stopped"
}
trap cleanup INT TERM EXIT

"$BIN/tether-server" --listen "$GRPC" --http "$HTTP" --metrics "$METRICS" &
server=$!
pids+=($server)
# Wait for the server's ports; if it exits instead (a port taken since the
# check, a bad TETHER_* value), fail with its status and no banner.
up=
for _ in $(seq 1 100); do
  if ! kill -0 "$server" 2>/dev/null; then
    status=0; wait "$server" || status=$?
    trap - INT TERM EXIT
    echo "tether: tether-server exited (status $status) before it was listening; see its message above" >&2
    exit $(( status == 0 ? 1 : status ))
  fi
  if (exec 3<>"/dev/tcp/${GRPC%:*}/${GRPC##*:}") 2>/dev/null &&
     (exec 3<>"/dev/tcp/${HTTP%:*}/${HTTP##*:}") 2>/dev/null &&
     (exec 3<>"/dev/tcp/${METRICS%:*}/${METRICS##*:}") 2>/dev/null; then
    up=1; break
  fi
  sleep 0.1
done
if [ -z "$up" ]; then
  echo "tether: tether-server is not listening on $GRPC, $HTTP and $METRICS after 10s" >&2
  exit 1
fi
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
