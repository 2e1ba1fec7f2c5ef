"""The offline plan check bites: each deliberately broken copy of the
Terraform tree fails it, with Terraform's own message for the fault.

    python test_plan_check.py TERRAFORM_DIR VAR_FILE

Each case copies the tree, changes one file, runs plan.py and expects exit 1
with the given text in the output. The unbroken tree is planned first, so a
case cannot pass because everything fails; settings a real deployment may use
(ACCEPTED) must plan too.
"""

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

BUCKET = 'resource "google_storage_bucket" "outputs" {\n'
LOCATION = "  location                    = var.region\n"
ACCESS = "  uniform_bucket_level_access = true\n"
STORAGE = "modules/storage/main.tf"
RETENTION = "  retention_days = var.output_retention_days\n"

# (name, file, text to find, replacement, expected text in Terraform's output)
CASES = [
    ("unknown argument", STORAGE, BUCKET, BUCKET + "  no_such_argument = true\n",
     'An argument named "no_such_argument" is not expected here.'),
    ("unknown block", STORAGE, BUCKET, BUCKET + "  no_such_block {}\n",
     'Blocks of type "no_such_block" are not expected here.'),
    ("missing required argument", STORAGE, LOCATION, "",
     'The argument "location" is required, but no definition was found.'),
    ("wrong type of an argument", STORAGE, ACCESS, '  uniform_bucket_level_access = ["yes"]\n',
     "Incorrect attribute value type"),
    ("wrong type of a module input", "main.tf", RETENTION,
     '  retention_days = "a week"\n',
     "Invalid value for input variable"),
    ("undefined variable", "main.tf", RETENTION,
     "  retention_days = var.no_such_variable\n",
     "Reference to undeclared input variable"),
    ("undefined module input", "main.tf", 'module "storage" {\n',
     'module "storage" {\n  no_such_input = 1\n',
     'An argument named "no_such_input" is not expected here.'),
    ("for_each over a sensitive value", "main.tf", 'module "storage" {\n',
     'resource "random_password" "probe" {\n'
     "  for_each = toset([var.mongodb_uri])\n"
     "  length   = 8\n"
     "}\n\n"
     'module "storage" {\n',
     "Invalid for_each argument"),
]


# Settings a real deployment may use, which must plan: (name, extra plan.py
# arguments).
ACCEPTED = [
    ("a region with a two-digit number", [
        "--var", "region=europe-west10",
        "--var", 'zones=["europe-west10-a", "europe-west10-b", "europe-west10-c"]',
    ]),
]


def plan(tree, var_file, *extra):
    result = subprocess.run(
        [sys.executable, str(HERE / "plan.py"), str(tree), "--var-file", str(var_file), *extra],
        capture_output=True,
        text=True,
    )
    return result.returncode, result.stdout + result.stderr


def main():
    tree, var_file = Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()
    code, output = plan(tree, var_file)
    if code != 0:
        print(output)
        print(f"FAIL: the unbroken tree does not plan (exit {code})")
        return 1
    failures = 0
    for name, extra in ACCEPTED:
        code, output = plan(tree, var_file, *extra)
        if code == 0:
            print(f"ok   {name}: plans")
        else:
            failures += 1
            print(output)
            print(f"FAIL {name}: exit {code}, expected it to plan")
    for name, file, find, replace, expected in CASES:
        with tempfile.TemporaryDirectory(prefix="tfbroken-") as tmp:
            copy = Path(tmp) / "tree"
            shutil.copytree(tree, copy, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
            target = copy / file
            text = target.read_text()
            if text.count(find) != 1:
                print(f"FAIL {name}: {file} has {text.count(find)} places to break, not one")
                failures += 1
                continue
            target.write_text(text.replace(find, replace))
            code, output = plan(copy, var_file)
        if code == 1 and expected in output:
            print(f"ok   {name}: refused ({expected})")
        else:
            failures += 1
            print(output)
            print(f"FAIL {name}: exit {code}, expected exit 1 with {expected!r}")
    print(f"{len(ACCEPTED) + len(CASES) - failures} of {len(ACCEPTED) + len(CASES)} checks as expected "
          f"({len(CASES)} broken copies, {len(ACCEPTED)} accepted settings)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
