#!/usr/bin/env bash
# Builds the GDTS images here, where no registry can be reached. See images/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

profile=${GDTS_IMAGE_PROFILE:-release}
case "$profile" in
  dev) target_dir=target/debug ;;
  release) target_dir=target/release ;;
  *) echo "images: GDTS_IMAGE_PROFILE must be dev or release" >&2; exit 2 ;;
esac
cargo build --profile "$profile" --bins

base=${GDTS_BASE_IMAGE:-}
if [ -z "$base" ]; then
  if docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    base=debian:bookworm-slim
  else
    base=gdts-base:bookworm
    if ! docker image inspect "$base" >/dev/null 2>&1; then
      # The machine's own Debian mirror, from its apt configuration.
      mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
      [ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
      [ -n "$mirror" ] || { echo "images: no Debian mirror found in the apt configuration" >&2; exit 1; }
      rootfs=$(mktemp -d)
      trap 'rm -rf "$rootfs"' EXIT
      echo "images: building $base with debootstrap from $mirror"
      debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >/dev/null
      rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
      tar -C "$rootfs" -c . | docker import - "$base" >/dev/null
    fi
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
cp "$target_dir/gdts-manager" "$target_dir/gdts-worker" "$ctx/"
cp "$(command -v etcd)" "$ctx/etcd"
# The web UI: its own files and the parts of its npm packages it loads.
[ -d webroot/node_modules/bootstrap ] || scripts/deps.sh
mkdir -p "$ctx/webroot/node_modules/bootstrap" "$ctx/webroot/node_modules/cronstrue"
cp webroot/*.html webroot/*.js webroot/*.css webroot/*.svg "$ctx/webroot/"
cp -r webroot/node_modules/bootstrap/dist "$ctx/webroot/node_modules/bootstrap/"
cp -r webroot/node_modules/cronstrue/dist "$ctx/webroot/node_modules/cronstrue/"
build gdts-manager:local images/manager/Dockerfile "$ctx"
build gdts-worker:local images/worker/Dockerfile "$ctx"
build gdts-etcd:local images/etcd/Dockerfile "$ctx"
build gdts-example-job:local images/example-job/Dockerfile images/example-job
rm -rf "$ctx"
