"""A Terraform provider for offline plans: the real schema, no cloud.

    provider.py --schema SCHEMA.json --gen GENERATED_DIR

Terraform starts it as a provider plugin (found through a filesystem mirror,
see plan-check.sh) and speaks protocol 6 to it over gRPC. It serves the
schema schema.py extracted from the provider's published bindings, so
Terraform itself checks the configuration against it: unknown arguments and
blocks, missing required ones, wrong types, block counts, and everything
Terraform core evaluates in a plan (variables, module inputs, `for_each`
over sensitive or unknown values, conditions). It plans every resource as a
create whose computed attributes are unknown, as the real provider would
before anything exists; data sources and ephemeral resources read as
placeholder values of the right type. It never applies anything.

Plugin handshake (hashicorp/go-plugin): Terraform sets
TF_PLUGIN_MAGIC_COOKIE; the plugin listens on loopback and prints
`1|6|tcp|ADDRESS|grpc` on stdout. The check runs Terraform with
TF_DISABLE_PLUGIN_TLS=1, so the connection is plain gRPC on loopback.
"""

import argparse
import json
import os
import sys
import threading
from concurrent import futures

MAGIC_COOKIE_KEY = "TF_PLUGIN_MAGIC_COOKIE"
MAGIC_COOKIE = "d602bf8f470bc67ca7faa0386276bbdd4330efaf76d1a219cb4d6991ca9872b2"

# cty's msgpack encoding of an unknown value: extension type 0.
import msgpack  # noqa: E402

UNKNOWN = msgpack.ExtType(0, b"\x00")
PLACEHOLDER = "offline-plan-placeholder"


def decode(dynamic_value):
    if not dynamic_value.msgpack:
        return None
    return msgpack.unpackb(dynamic_value.msgpack, raw=False, strict_map_key=False)


def encode(pb, value):
    return pb.DynamicValue(msgpack=msgpack.packb(value, use_bin_type=True))


def placeholder(cty_type):
    """A known value of the type, for what a read would have returned."""
    if cty_type == "string":
        return PLACEHOLDER
    if cty_type == "number":
        return 0
    if cty_type == "bool":
        return False
    if isinstance(cty_type, list) and cty_type[0] in ("list", "set", "tuple"):
        return []
    if isinstance(cty_type, list) and cty_type[0] in ("map", "object"):
        return {}
    return None


def fill(block, value, computed_value):
    """`value` (an object of `block`) with each computed attribute that is
    null replaced by computed_value(type) and write-only ones nulled, through
    nested blocks."""
    if value is None or isinstance(value, msgpack.ExtType):
        return value
    out = dict(value)
    for attr in block["attributes"]:
        name = attr["name"]
        if attr["write_only"]:
            out[name] = None
        elif out.get(name) is None and attr["computed"]:
            out[name] = computed_value(attr["type"])
        else:
            out.setdefault(name, None)
    for nested in block["blocks"]:
        items = out.get(nested["name"])
        if isinstance(items, list):
            out[nested["name"]] = [fill(nested["block"], item, computed_value) for item in items]
    return out


def known(value):
    return value is not None and not isinstance(value, msgpack.ExtType)


def service_account_email(planned, provider_config):
    """google_service_account: the provider works out `email` and `member`
    during the plan (since 6.8), from `account_id` and the project."""
    project = planned.get("project")
    if not known(project):
        project = (provider_config or {}).get("project")
    if known(planned.get("account_id")) and known(project):
        email = f"{planned['account_id']}@{project}.iam.gserviceaccount.com"
        planned["email"], planned["member"] = email, f"serviceAccount:{email}"
        planned["project"] = project
    return planned


# Computed attributes the real provider knows at plan time (its
# CustomizeDiff): without them a plan here would call values unknown that a
# real plan knows, and refuse a for_each the real one accepts.
PLAN_TIME = {"google_service_account": service_account_email}


def schema_message(pb, block):
    def to_block(b):
        msg = pb.Schema.Block()
        for a in b["attributes"]:
            msg.attributes.add(
                name=a["name"],
                type=json.dumps(a["type"]).encode(),
                required=a["required"],
                optional=a["optional"],
                computed=a["computed"],
                sensitive=a["sensitive"],
                write_only=a["write_only"],
            )
        for n in b["blocks"]:
            nb = msg.block_types.add(
                type_name=n["name"],
                nesting=pb.Schema.NestedBlock.LIST,
                min_items=n["min_items"],
                max_items=n["max_items"],
            )
            nb.block.CopyFrom(to_block(n["block"]))
        return msg

    return pb.Schema(version=0, block=to_block(block))


def serve(schema, gen_dir):
    sys.path.insert(0, gen_dir)
    import grpc
    import go_plugin_controller_pb2 as ctl_pb
    import go_plugin_controller_pb2_grpc as ctl_grpc
    import tfplugin6_subset_pb2 as pb
    import tfplugin6_subset_pb2_grpc as pb_grpc

    stopped = threading.Event()
    provider_config = {}

    class Provider(pb_grpc.ProviderServicer):
        def GetProviderSchema(self, request, context):
            resp = pb.GetProviderSchema.Response()
            resp.provider.CopyFrom(schema_message(pb, schema["provider_config"]))
            for field, kind in (
                ("resource_schemas", "resources"),
                ("data_source_schemas", "data_sources"),
                ("ephemeral_resource_schemas", "ephemeral_resources"),
            ):
                target = getattr(resp, field)
                for name, block in schema[kind].items():
                    target[name].CopyFrom(schema_message(pb, block))
            resp.server_capabilities.get_provider_schema_optional = False
            return resp

        def ValidateProviderConfig(self, request, context):
            return pb.ValidateProviderConfig.Response()

        def ValidateResourceConfig(self, request, context):
            return pb.ValidateResourceConfig.Response()

        def ValidateDataResourceConfig(self, request, context):
            return pb.ValidateDataResourceConfig.Response()

        def ValidateEphemeralResourceConfig(self, request, context):
            return pb.ValidateEphemeralResourceConfig.Response()

        def ConfigureProvider(self, request, context):
            provider_config.update(decode(request.config) or {})
            return pb.ConfigureProvider.Response()

        def PlanResourceChange(self, request, context):
            proposed = decode(request.proposed_new_state)
            block = schema["resources"][request.type_name]
            planned = fill(block, proposed, lambda _type: UNKNOWN)
            if request.type_name in PLAN_TIME and isinstance(planned, dict):
                planned = PLAN_TIME[request.type_name](planned, provider_config)
            return pb.PlanResourceChange.Response(planned_state=encode(pb, planned))

        def ReadDataSource(self, request, context):
            block = schema["data_sources"][request.type_name]
            state = fill(block, decode(request.config), placeholder)
            return pb.ReadDataSource.Response(state=encode(pb, state))

        def OpenEphemeralResource(self, request, context):
            block = schema["ephemeral_resources"][request.type_name]
            result = fill(block, decode(request.config), placeholder)
            return pb.OpenEphemeralResource.Response(result=encode(pb, result))

        def CloseEphemeralResource(self, request, context):
            return pb.CloseEphemeralResource.Response()

        def StopProvider(self, request, context):
            return pb.StopProvider.Response()

    class Controller(ctl_grpc.GRPCControllerServicer):
        def Shutdown(self, request, context):
            stopped.set()
            return ctl_pb.Empty()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    pb_grpc.add_ProviderServicer_to_server(Provider(), server)
    ctl_grpc.add_GRPCControllerServicer_to_server(Controller(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    sys.stdout.write(f"1|6|tcp|127.0.0.1:{port}|grpc\n")
    sys.stdout.flush()
    stopped.wait()
    server.stop(grace=0.5).wait()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--schema", required=True)
    parser.add_argument("--gen", required=True, help="directory of the generated gRPC modules")
    args = parser.parse_args()
    if os.environ.get(MAGIC_COOKIE_KEY) != MAGIC_COOKIE:
        print("This is a Terraform provider plugin: Terraform starts it, not people.", file=sys.stderr)
        return 1
    with open(args.schema) as f:
        schema = json.load(f)
    serve(schema, args.gen)
    return 0


if __name__ == "__main__":
    sys.exit(main())
