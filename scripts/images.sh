#!/usr/bin/env bash
# Builds the GDTS images here, where no registry can be reached. See images/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${GDTS_IMAGE_PROFILE:-release}
case "$profile" in
  dev | release) ;;
  *) echo "images: GDTS_IMAGE_PROFILE must be dev or release" >&2; exit 2 ;;
esac
cargo build --profile "$profile" --bins

# Temporary directories go, whether the build succeeds or not.
temp_dirs=()
trap 'rm -rf "${temp_dirs[@]}"' EXIT

base=${GDTS_BASE_IMAGE:-}
if [ -z "$base" ]; then
  if docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    base=debian:bookworm-slim
  else
    base=gdts-base:bookworm
    docker image inspect "$base" >/dev/null 2>&1 || scripts/debootstrap-image.sh "$base"
  fi
fi

build() { # image dockerfile context
  local log
  log=$(mktemp)
  # The classic builder resolves FROM against local images first.
  if ! DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$base" -f "$2" -t "$1" "$3" >"$log" 2>&1; then
    cat "$log" >&2
    rm -f "$log"
    exit 1
  fi
  rm -f "$log"
  echo "images: built $1 (on $base)"
}

ctx=$(mktemp -d)
temp_dirs+=("$ctx")
scripts/image-context.sh "$ctx"
cp "$(command -v etcd)" "$ctx/etcd"
build gdts-manager:local images/manager/Dockerfile "$ctx"
build gdts-worker:local images/worker/Dockerfile "$ctx"
build gdts-etcd:local images/etcd/Dockerfile "$ctx"
build gdts-example-job:local images/example-job/Dockerfile images/example-job
