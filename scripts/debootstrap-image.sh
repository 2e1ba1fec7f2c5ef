#!/usr/bin/env bash
# Makes a Debian 12 (bookworm) image where no registry can be reached:
# debootstrap --variant=minbase from the machine's own apt mirror (read from
# its apt configuration), imported with `docker import`.
#   scripts/debootstrap-image.sh IMAGE [PACKAGE,PACKAGE,...]
set -euo pipefail
[ $# -ge 1 ] || { echo "usage: scripts/debootstrap-image.sh IMAGE [PACKAGES]" >&2; exit 2; }
image=$1
include=${2:-}
mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { echo "debootstrap-image: no Debian mirror found in the apt configuration" >&2; exit 1; }
rootfs=$(mktemp -d)
trap 'rm -rf "$rootfs"' EXIT
echo "debootstrap-image: building $image with debootstrap from $mirror"
debootstrap --variant=minbase ${include:+--include="$include"} bookworm "$rootfs" "$mirror" >/dev/null
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*
tar -C "$rootfs" -c . | docker import - "$image" >/dev/null
