"""`terraform plan` offline, against the providers' real schemas.

    python plan.py [--cache DIR] MODULE_DIR [--var-file FILE | --var K=V]...

Runs `terraform init` and `terraform plan` of a copy of MODULE_DIR with
providers served by provider.py from schemas extracted (schema.py) from the
providers' published CDK bindings, installed through a filesystem mirror, so
no provider needs downloading. Exits 0 when the plan succeeds, 1 when
Terraform reports errors (printed), 2 on a setup failure.

The bindings are fetched with pip once into the cache (default
.venv-tf/tfplan); PROVIDERS pins which release of each provider is served.
"""

import argparse
import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
TERRAFORM_PY = ROOT / "scripts" / "terraform.py"

# name -> (PyPI package with the provider's bindings, its version). The
# package's release notes name the provider release it was built from
# (google 7.46.1, random 3.9.1); schema.py reads it from the assembly.
PROVIDERS = {
    "google": ("cdktn-provider-google", "20.3.1"),
    "random": ("cdktn-provider-random", "15.0.1"),
    "tls": ("cdktn-provider-tls", "14.1.1"),
}
PROTOS = ["tfplugin6_subset.proto", "go_plugin_controller.proto"]


def log(message):
    print(f"plan.py: {message}", file=sys.stderr, flush=True)


def generate_stubs(cache):
    gen = cache / "gen"
    stamp = gen / "stamp"
    want = "".join((HERE / p).read_text() for p in PROTOS)
    if stamp.exists() and stamp.read_text() == want:
        return gen
    gen.mkdir(parents=True, exist_ok=True)
    subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{HERE}", f"--python_out={gen}",
         f"--grpc_python_out={gen}", *PROTOS],
        check=True,
    )
    stamp.write_text(want)
    return gen


def provider_schema(cache, name):
    package, version = PROVIDERS[name]
    out = cache / f"{name}-{package}-{version}.json"
    if out.exists():
        return out
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    log(f"fetching {package} {version} (the {name} provider's schema)")
    subprocess.run(
        [sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-deps",
         f"{package}=={version}", "-d", str(wheels)],
        check=True,
    )
    wheel = next(wheels.glob(f"{package.replace('-', '_')}-{version}-*.whl"))
    partial = out.with_suffix(".partial")
    subprocess.run([sys.executable, str(HERE / "schema.py"), str(wheel), str(partial)], check=True)
    partial.rename(out)
    wheel.unlink()
    return out


def make_mirror(mirror, cache, gen):
    """One executable per provider in the filesystem mirror's unpacked layout."""
    for name in PROVIDERS:
        schema_file = provider_schema(cache, name)
        version = json.loads(schema_file.read_text())["version"]
        target = mirror / "registry.terraform.io" / "hashicorp" / name / version / "linux_amd64"
        target.mkdir(parents=True)
        exe = target / f"terraform-provider-{name}_v{version}"
        exe.write_text(
            "#!/bin/sh\n"
            f"exec '{sys.executable}' '{HERE / 'provider.py'}' --schema '{schema_file}' --gen '{gen}'\n"
        )
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)


def terraform(work, env, *args):
    return subprocess.run(
        [sys.executable, str(TERRAFORM_PY), f"-chdir={work}", *args],
        env=env,
        capture_output=True,
        text=True,
    )


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module")
    parser.add_argument("--cache", default=str(ROOT / ".venv-tf" / "tfplan"))
    parser.add_argument("--var-file", action="append", default=[])
    parser.add_argument("--var", action="append", default=[])
    args = parser.parse_args()

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    try:
        gen = generate_stubs(cache)
    except subprocess.CalledProcessError as e:
        log(f"generating the gRPC stubs failed: {e}")
        return 2

    with tempfile.TemporaryDirectory(prefix="tfplan-") as tmp:
        tmp = Path(tmp)
        try:
            make_mirror(tmp / "mirror", cache, gen)
        except (subprocess.CalledProcessError, StopIteration) as e:
            log(f"setting up the providers failed: {e}")
            return 2
        cli_config = tmp / "terraform.rc"
        cli_config.write_text(
            "provider_installation {\n"
            f'  filesystem_mirror {{\n    path = "{tmp / "mirror"}"\n  }}\n'
            "}\n"
        )
        work = tmp / "module"
        shutil.copytree(args.module, work, ignore=shutil.ignore_patterns(".terraform", "*.tfstate*"))
        var_files = [str(Path(f).resolve()) for f in args.var_file]
        env = dict(os.environ)
        env.update({
            "TF_CLI_CONFIG_FILE": str(cli_config),
            "TF_DISABLE_PLUGIN_TLS": "1",
            "TF_IN_AUTOMATION": "1",
            "TF_INPUT": "0",
            "TF_DATA_DIR": str(tmp / "data"),
            "CHECKPOINT_DISABLE": "1",
        })
        init = terraform(work, env, "init", "-no-color", "-input=false", "-backend=false")
        if init.returncode != 0:
            sys.stderr.write(init.stdout + init.stderr)
            log("terraform init failed")
            return 1
        plan_args = ["plan", "-no-color", "-input=false", "-lock=false", "-refresh=false"]
        plan_args += [f"-var-file={f}" for f in var_files] + [f"-var={v}" for v in args.var]
        plan = terraform(work, env, *plan_args)
        if plan.returncode != 0:
            sys.stderr.write(plan.stdout + plan.stderr)
            log("terraform plan failed")
            return 1
        summary = [line for line in plan.stdout.splitlines() if line.startswith("Plan:")]
        log(summary[0] if summary else "plan succeeded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
