"""Builds a provider's Terraform schema from its CDK bindings, offline.

    python schema.py WHEEL OUT.json

WHEEL is a prebuilt CDK binding from PyPI (for example
`cdktn-provider-google`), which carries a jsii assembly: one JSON document
with every resource, data source and ephemeral resource of one provider
release, each with its configuration struct (argument names, types, whether
optional, nested blocks) and its class (the attributes a resource exports).
OUT.json is the schema the plan check's provider serves (see provider.py):

    {"provider": NAME, "version": VERSION, "provider_config": BLOCK,
     "resources": {TYPE: BLOCK}, "data_sources": {...},
     "ephemeral_resources": {...}}

    BLOCK = {"attributes": [{"name", "type", "required", "optional",
                             "computed", "sensitive", "write_only"}],
             "blocks": [{"name", "nesting", "min_items", "max_items",
                         "block": BLOCK}]}

What the assembly does not say, and how it is filled in:
- Whether an optional argument is also computed: every optional argument is
  taken as optional and computed (a plan then shows it unknown when unset),
  which never rejects a configuration the real provider accepts.
- List or set: the bindings use arrays for both; both are taken as lists.
- Sensitive attributes: the bindings do not mark them; SENSITIVE below lists
  the ones this project's configuration touches.
- Write-only arguments: by the provider's convention, names ending in `_wo`.
"""

import io
import json
import re
import sys
import tarfile
import zipfile

# (type, attribute) pairs the provider marks sensitive, which the bindings do
# not record. Values derived from them are sensitive in a plan (a for_each
# over one fails, as it would against the real provider).
SENSITIVE = {
    ("random_password", "result"),
    ("random_password", "bcrypt_hash"),
    ("google_secret_manager_secret_version", "secret_data"),
    ("google_secret_manager_secret_version", "secret_data_wo"),
    ("google_sql_user", "password"),
    ("google_service_account_key", "private_key"),
}

# "Represents a {@link https://.../providers/hashicorp/random/3.9.1/docs/resources/password random_password}."
LINK = re.compile(r"\{@link https://[^ ]*/([0-9][^/ ]*)/docs(?:/(resources|data-sources|ephemeral-resources)/[a-z0-9_]+)? ([a-z0-9_]+)\}")
ANCHOR = re.compile(r"\{@link https://[^ #]*#([a-z0-9_]+) ")
KINDS = {"resources": "resources", "data-sources": "data_sources", "ephemeral-resources": "ephemeral_resources"}
PRIMITIVES = {"string": "string", "number": "number", "boolean": "bool", "any": "dynamic", "json": "dynamic"}
MAPS = {
    "StringMap": ["map", "string"],
    "NumberMap": ["map", "number"],
    "BooleanMap": ["map", "bool"],
    "AnyMap": ["map", "dynamic"],
    "StringMapList": ["list", ["map", "string"]],
    "NumberMapList": ["list", ["map", "number"]],
    "BooleanMapList": ["list", ["map", "bool"]],
    "AnyMapList": ["list", ["map", "dynamic"]],
    "StringListList": ["list", ["list", "string"]],
    "NumberListList": ["list", ["list", "number"]],
}


def load_assembly(wheel_path):
    with zipfile.ZipFile(wheel_path) as wheel:
        tgz = next(n for n in wheel.namelist() if n.endswith(".jsii.tgz"))
        data = wheel.read(tgz)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return json.load(tar.extractfile("package/.jsii"))


def snake(name):
    return re.sub(r"(?<=[a-z0-9])([A-Z])", r"_\1", name).lower()


def strip_resolvable(ref):
    """`T | IResolvable` is T: the bindings add IResolvable to accept tokens."""
    if "union" in ref:
        rest = [t for t in ref["union"]["types"] if not t.get("fqn", "").endswith(".IResolvable")]
        if len(rest) == 1:
            return rest[0]
        if not rest:
            return {"primitive": "boolean"}
        return {"primitive": "any"}
    return ref


class Extractor:
    def __init__(self, assembly):
        self.types = assembly["types"]

    def is_struct(self, ref):
        t = self.types.get(ref.get("fqn", ""))
        return bool(t and t.get("kind") == "interface" and t.get("datatype"))

    def value_type(self, ref):
        """The cty type of an attribute, as Terraform writes it in JSON."""
        ref = strip_resolvable(ref)
        if "primitive" in ref:
            return PRIMITIVES.get(ref["primitive"], "dynamic")
        if "collection" in ref:
            kind = ref["collection"]["kind"]
            element = self.value_type(ref["collection"]["elementtype"])
            return ["list" if kind == "array" else "map", element]
        fqn = ref.get("fqn", "")
        short = fqn.rsplit(".", 1)[-1]
        if short in MAPS:
            return MAPS[short]
        if short == "IResolvable":
            return "bool"
        return "dynamic"

    def block(self, struct_fqn, type_name):
        """Arguments and nested blocks of a configuration struct."""
        attributes, blocks = [], []
        for prop in self.types[struct_fqn].get("properties", []):
            docs = prop.get("docs", {})
            anchor = ANCHOR.search(docs.get("remarks", "") + " " + docs.get("summary", ""))
            name = anchor.group(1) if anchor else snake(prop["name"])
            optional = bool(prop.get("optional"))
            ref = strip_resolvable(prop["type"])
            element = None
            if "collection" in ref and ref["collection"]["kind"] == "array":
                element = strip_resolvable(ref["collection"]["elementtype"])
            if self.is_struct(ref):
                blocks.append(self.nested(name, ref["fqn"], type_name, optional, max_items=1))
            elif element is not None and self.is_struct(element):
                blocks.append(self.nested(name, element["fqn"], type_name, optional, max_items=0))
            else:
                write_only = name.endswith("_wo")
                attributes.append({
                    "name": name,
                    "type": self.value_type(ref),
                    "required": not optional,
                    "optional": optional,
                    "computed": optional and not write_only,
                    "sensitive": (type_name, name) in SENSITIVE,
                    "write_only": write_only,
                })
        return {"attributes": attributes, "blocks": blocks}

    def nested(self, name, fqn, type_name, optional, max_items):
        return {
            "name": name,
            "nesting": "list",
            "min_items": 0 if optional else 1,
            "max_items": max_items,
            "block": self.block(fqn, type_name),
        }

    def exported(self, cls, block, type_name):
        """Adds the attributes a resource exports that are not arguments."""
        known = {a["name"] for a in block["attributes"]} | {b["name"] for b in block["blocks"]}
        for prop in cls.get("properties", []):
            if prop.get("static") or not prop.get("immutable") or prop["name"].endswith("Input"):
                continue
            name = snake(prop["name"])
            if name in known or name in ("fqn", "friendly_unique_id", "terraform_resource_type"):
                continue
            known.add(name)
            block["attributes"].append({
                "name": name,
                "type": self.value_type(prop["type"]),
                "required": False,
                "optional": False,
                "computed": True,
                "sensitive": (type_name, name) in SENSITIVE,
                "write_only": False,
            })

    def schema(self):
        out = {"resources": {}, "data_sources": {}, "ephemeral_resources": {}}
        for cls in self.types.values():
            if cls.get("kind") != "class" or "initializer" not in cls:
                continue
            link = LINK.search(cls.get("docs", {}).get("summary", ""))
            params = cls["initializer"].get("parameters", [])
            config = next((p for p in params if p["name"] == "config"), None)
            if not link or config is None or "fqn" not in config["type"]:
                continue
            version, kind, type_name = link.groups()
            block = self.block(config["type"]["fqn"], type_name)
            if kind is None:
                out["provider"] = type_name
                out["version"] = version
                out["provider_config"] = block
                continue
            self.exported(cls, block, type_name)
            out[KINDS[kind]][type_name] = block
        return out


def main():
    if len(sys.argv) != 3:
        print(__doc__.split("\n\n")[1], file=sys.stderr)
        return 2
    assembly = load_assembly(sys.argv[1])
    schema = Extractor(assembly).schema()
    if "provider" not in schema or not schema["resources"]:
        print(f"schema.py: no provider found in {sys.argv[1]}", file=sys.stderr)
        return 1
    with open(sys.argv[2], "w") as out:
        json.dump(schema, out, separators=(",", ":"), sort_keys=True)
    print(f"schema.py: {schema['provider']} {schema['version']}: {len(schema['resources'])} resources, "
          f"{len(schema['data_sources'])} data sources, {len(schema['ephemeral_resources'])} ephemeral resources")
    return 0


if __name__ == "__main__":
    sys.exit(main())
