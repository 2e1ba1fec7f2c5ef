#!/usr/bin/env bash
# Starts a local GDTS cluster: etcd, a MongoDB wire-protocol server
# (SecantusDB), one manager and two workers, with data under .dev/.
# Ctrl-C stops everything it started (by pid).
set -euo pipefail
cd "$(dirname "$0")/.."

dev=.dev
etcd_port=${GDTS_DEV_ETCD_PORT:-2379}
etcd_peer_port=${GDTS_DEV_ETCD_PEER_PORT:-2380}
mongo_port=${GDTS_DEV_MONGO_PORT:-27017}
port=${PORT:-8070}
mkdir -p "$dev/etcd" "$dev/mongo" "$dev/logs"

pids=()
# Ctrl-C stops everything and exits 0; any other way out keeps its status
# (a process that died, a failed start), so `make dev` fails when dev does.
stop_all() {
  local status=${1:-$?}
  trap - INT TERM EXIT
  echo "dev: stopping"
  # Workers and manager first so the workers can flush their run records.
  for ((i = ${#pids[@]} - 1; i >= 0; i--)); do
    kill "${pids[i]}" 2>/dev/null || true
    wait "${pids[i]}" 2>/dev/null || true
  done
  exit "$status"
}
trap 'stop_all 0' INT TERM
trap stop_all EXIT

wait_for() { # what, command...
  local what=$1
  shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "dev: $what did not come up; see $dev/logs" >&2
  exit 1
}

etcd --name dev --data-dir "$dev/etcd" \
  --listen-client-urls "http://127.0.0.1:$etcd_port" --advertise-client-urls "http://127.0.0.1:$etcd_port" \
  --listen-peer-urls "http://127.0.0.1:$etcd_peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$etcd_peer_port" \
  --initial-cluster "dev=http://127.0.0.1:$etcd_peer_port" \
  --auto-compaction-mode=periodic --auto-compaction-retention=5m >"$dev/logs/etcd.log" 2>&1 &
pids+=($!)
.venv/bin/secantusd-py --host 127.0.0.1 --port "$mongo_port" --storage-path "$dev/mongo" \
  --standalone --log-level WARNING >"$dev/logs/mongo.log" 2>&1 &
pids+=($!)
wait_for etcd etcdctl --endpoints "http://127.0.0.1:$etcd_port" endpoint health
wait_for "the Mongo server" bash -c "exec 3<>/dev/tcp/127.0.0.1/$mongo_port"

export GDTS_ETCD_ENDPOINTS="http://127.0.0.1:$etcd_port"
export GDTS_MONGO_URI="mongodb://127.0.0.1:$mongo_port"
# Authentication off, so listen on loopback only (unless GDTS_BIND says otherwise).
GDTS_AUTH=off GDTS_BIND="${GDTS_BIND:-127.0.0.1}" PORT=$port GDTS_WEBROOT=webroot target/debug/gdts-manager >"$dev/logs/manager.log" 2>&1 &
pids+=($!)
for id in dev-worker-1 dev-worker-2; do
  GDTS_WORKER_ID=$id target/debug/gdts-worker >"$dev/logs/$id.log" 2>&1 &
  pids+=($!)
done
wait_for "the manager" curl -fsS "http://127.0.0.1:$port/healthz"

cat <<MSG
GDTS is running (logs in $dev/logs):
  !! AUTHENTICATION IS OFF in this dev cluster: anyone who can reach port $port
  !! can run any command here. Images and Terraform turn it on (GDTS_ADMIN_TOKEN).
  web UI:      http://127.0.0.1:$port/
  JSON API:    http://127.0.0.1:$port/api/v1/jobs  (OpenAPI: /api/v1/openapi.json)
  try:         curl -s -d 'job={"name":"hello","command":"echo hi","cronExpr":"*/5 * * * * * *"}' http://127.0.0.1:$port/job/save
               curl -s 'http://127.0.0.1:$port/job/log?name=hello'
Press Ctrl-C to stop everything.
MSG
wait -n "${pids[@]}" || true
echo "dev: a process exited; see $dev/logs" >&2
exit 1
