#!/usr/bin/env bash
# Makes sure a Docker daemon answers: installs docker.io when missing and
# starts dockerd in the background when none is running (as on a fresh CI
# machine). An already running daemon is left as it is.
set -euo pipefail

if ! command -v dockerd >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "docker-up: installing docker.io"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq docker.io >/dev/null
fi
if docker info >/dev/null 2>&1; then
  exit 0
fi
log=${GDTS_DOCKERD_LOG:-/var/log/gdts-dockerd.log}
echo "docker-up: starting dockerd (log: $log)"
nohup dockerd >"$log" 2>&1 &
for _ in $(seq 1 60); do
  if docker info >/dev/null 2>&1; then
    exit 0
  fi
  sleep 0.5
done
echo "docker-up: dockerd did not come up; see $log" >&2
exit 1
