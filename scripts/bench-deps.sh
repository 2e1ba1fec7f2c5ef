#!/usr/bin/env bash
# What `make bench` and `make soak` need beyond `make deps`: matplotlib in the
# project's .venv (never system-wide), for the plots (scripts/bench-plot.py),
# Debian's bash-static, for one K=1000 run, and the machine's locale in the
# glibc locale archive (below). Not part of `make test`. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

MATPLOTLIB_VERSION=3.11.2

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if ! .venv/bin/python -c "import matplotlib" >/dev/null 2>&1; then
  echo "bench-deps: installing matplotlib ${MATPLOTLIB_VERSION} into .venv"
  .venv/bin/pip install -q --disable-pip-version-check "matplotlib==${MATPLOTLIB_VERSION}"
fi
# Debian's statically linked bash, which one K=1000 run uses (GDTS_SHELL).
if ! command -v bash-static >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "bench-deps: installing bash-static"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq bash-static >/dev/null
fi
# Every shell run loads the locale it is given (LANG, LC_ALL). A locale with
# a directory of its own under /usr/lib/locale (Debian's C.utf8, the default
# LANG of many images) is a dozen files opened and mapped by every run, about
# 0.2 ms of CPU each; out of the locale archive it is one mapping. Worker
# hosts should have it in the archive (README, "Worker hosts"); so does the
# machine the benchmarks measure. Same locale data, so nothing else changes.
locale_now="${LC_ALL:-${LANG:-}}"
case "$locale_now" in
  "" | C | POSIX) ;;
  *)
    # glibc's spelling of the codeset (C.UTF-8 is C.utf8, en_US.8859-1 is
    # en_US.iso88591); a @modifier stays as it is.
    modifier=""
    name="$locale_now"
    case "$name" in *@*) modifier="@${name#*@}"; name="${name%%@*}" ;; esac
    base="${name%%.*}"
    codeset=""
    if [ "$base" != "$name" ]; then
      codeset="$(printf '%s' "${name#*.}" | tr -cd '[:alnum:]' | tr '[:upper:]' '[:lower:]')"
      case "$codeset" in *[!0-9]*) ;; *) codeset="iso${codeset}" ;; esac
      codeset=".${codeset}"
    fi
    wanted="${base}${codeset}${modifier}"
    dir="/usr/lib/locale/${wanted}"
    archived="$(localedef --list-archive 2>/dev/null || true)"
    if [ -d "$dir" ] && ! grep -qxF "$wanted" <<<"$archived"; then
      sudo=""
      [ "$(id -u)" -eq 0 ] || sudo="sudo"
      echo "bench-deps: adding locale ${wanted} to the locale archive"
      $sudo localedef --add-to-archive "$dir" ||
        echo "bench-deps: could not; every shell run then loads ${wanted} from its files"
    fi
    ;;
esac
