#!/usr/bin/env bash
# Builds the two "VM" images the boot rehearsal boots (scripts/rehearsal/rehearse.py):
#   gdts-rehearsal-debian:12  Debian 12 with systemd as PID 1, as the etcd VMs
#                             run; apt sees only a local repository holding
#                             etcd-server and etcd-client, so the boot script's apt-get runs
#                             for real without leaving the test's network.
#   gdts-rehearsal-cos:local  what matters of Container-Optimized OS: systemd,
#                             Docker, an INPUT firewall that drops all but SSH,
#                             no package manager, cloud-init's write_files and
#                             runcmd applied from the user-data metadata.
# Both read their boot script (startup-script or user-data) from the metadata
# server at boot, as Google's guest agent and COS's cloud-init do.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
base=gdts-rehearsal-base:bookworm
packages=systemd,systemd-sysv,dbus,curl,ca-certificates,iptables,iproute2,procps,e2fsprogs,python3-yaml,docker.io

temp_dirs=()
trap 'rm -rf "${temp_dirs[@]}"' EXIT

if ! docker image inspect "$base" >/dev/null 2>&1; then
  echo "rehearsal: building $base (a few minutes, once)"
  "$here/../debootstrap-image.sh" "$base" "$packages"
fi

# The registry the worker VM pulls its image from: Debian's docker-registry,
# unpacked (not installed, so no service starts on this machine).
cache=${GDTS_REHEARSAL_CACHE:-$here/../../target/rehearsal}
if ! [ -x "$cache/registry/usr/bin/docker-registry" ]; then
  mkdir -p "$cache"
  debs=$(mktemp -d)
  temp_dirs+=("$debs")
  (cd "$debs" && { apt-get download docker-registry >/dev/null 2>&1 || { apt-get update -qq && apt-get download docker-registry >/dev/null; }; })
  rm -rf "$cache/registry"
  dpkg-deb -x "$debs"/docker-registry_*.deb "$cache/registry"
fi

# The packages of the Debian VM's local repository.
etcd_debs="etcd-server etcd-client"
# The VM images are rebuilt when what goes into them changes.
hash=$( (cat "$here"/guest/* "$here"/*.Dockerfile; echo "$etcd_debs") | sha256sum | cut -c1-16)
current() { [ "$(docker image inspect -f '{{index .Config.Labels "gdts.rehearsal"}}' "$1" 2>/dev/null)" = "$hash" ]; }

# etcd-server, etcd-client and what they need, as a local apt repository for the Debian VM.
if ! current gdts-rehearsal-debian:12; then
  ctx=$(mktemp -d)
  temp_dirs+=("$ctx")
  mkdir -p "$ctx/debs"
  # shellcheck disable=SC2086 # a list of package names
  (cd "$ctx/debs" && { apt-get download $etcd_debs >/dev/null 2>&1 || { apt-get update -qq && apt-get download $etcd_debs >/dev/null; }; })
  (cd "$ctx/debs" && dpkg-scanpackages --multiversion . /dev/null 2>/dev/null >Packages)
  cp "$here"/guest/* "$ctx/"
  DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$base" --label "gdts.rehearsal=$hash" -f "$here/debian.Dockerfile" \
    -t gdts-rehearsal-debian:12 "$ctx" >"$ctx/build.log" 2>&1 || { cat "$ctx/build.log" >&2; exit 1; }
  echo "rehearsal: built gdts-rehearsal-debian:12"
fi
if ! current gdts-rehearsal-cos:local; then
  ctx=$(mktemp -d)
  temp_dirs+=("$ctx")
  cp "$here"/guest/* "$ctx/"
  DOCKER_BUILDKIT=0 docker build -q --build-arg "BASE_IMAGE=$base" --label "gdts.rehearsal=$hash" -f "$here/cos.Dockerfile" \
    -t gdts-rehearsal-cos:local "$ctx" >"$ctx/build.log" 2>&1 || { cat "$ctx/build.log" >&2; exit 1; }
  echo "rehearsal: built gdts-rehearsal-cos:local"
fi
