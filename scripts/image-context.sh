#!/usr/bin/env bash
# Assembles the build context of the manager and worker images in DIR: the
# binaries (from target/release, or target/debug with GDTS_IMAGE_PROFILE=dev)
# the web UI the manager image serves (webroot/ with the parts of its npm
# packages it loads), and the CA bundle both need for TLS (Google APIs,
# MongoDB Atlas; the slim Debian base has none). Used by scripts/images.sh and by the registry build in
# images/README.md and docs/deploy-gcp.md. Build the binaries first.
#   scripts/image-context.sh DIR
set -euo pipefail
[ $# -eq 1 ] || { echo "usage: scripts/image-context.sh DIR" >&2; exit 2; }
ctx=$1
cd "$(dirname "$0")/.."
case "${GDTS_IMAGE_PROFILE:-release}" in
  dev) target_dir=target/debug ;;
  release) target_dir=target/release ;;
  *) echo "image-context: GDTS_IMAGE_PROFILE must be dev or release" >&2; exit 2 ;;
esac
for bin in gdts-manager gdts-worker; do
  [ -x "$target_dir/$bin" ] || { echo "image-context: $target_dir/$bin is missing: cargo build first" >&2; exit 1; }
done
[ -d webroot/node_modules/bootstrap ] && [ -d webroot/node_modules/chart.js ] || scripts/deps.sh
bundle=/etc/ssl/certs/ca-certificates.crt
[ -s "$bundle" ] || { echo "image-context: $bundle is missing: install ca-certificates" >&2; exit 1; }
cp "$bundle" "$ctx/ca-certificates.crt"
mkdir -p "$ctx/webroot/node_modules/bootstrap" "$ctx/webroot/node_modules/cronstrue" "$ctx/webroot/node_modules/chart.js/dist"
cp "$target_dir/gdts-manager" "$target_dir/gdts-worker" "$ctx/"
cp webroot/*.html webroot/*.js webroot/*.css webroot/*.svg "$ctx/webroot/"
cp -r webroot/node_modules/bootstrap/dist "$ctx/webroot/node_modules/bootstrap/"
cp -r webroot/node_modules/cronstrue/dist "$ctx/webroot/node_modules/cronstrue/"
cp webroot/node_modules/chart.js/dist/chart.umd.min.js "$ctx/webroot/node_modules/chart.js/dist/"
