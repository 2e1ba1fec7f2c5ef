"""Stand-ins for the Google endpoints the VMs' boot scripts read, for the
boot rehearsal (tests/tests/boot_rehearsal.rs):

- the metadata server (plain HTTP, port 80 of metadata.google.internal):
  each instance's attributes (looked up by the caller's address), the
  service account token, the project id; requests without
  `Metadata-Flavor: Google` are refused, as the real server does;
- Secret Manager's `versions/latest:access` (HTTPS, secretmanager.googleapis.com),
  which answers only a caller presenting the metadata server's token.

    python3 standin.py --bind IP --config FILE --cert CERT --key KEY

FILE is JSON: {"instances": {"IP": {"attributes": {...}}}, "project": "...",
"secrets": {"NAME": "VALUE"}}. It is read on every request, so the test can
change an instance's metadata while it runs. Every request is logged to stdout.
"""
import argparse
import base64
import http.server
import json
import re
import ssl
import sys
import threading

TOKEN = "rehearsal-access-token"


def handler(config_path, kind):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            print(f"{kind} {self.client_address[0]} {fmt % args}", flush=True)

        def reply(self, status, body, content_type="text/plain"):
            data = body.encode() if isinstance(body, str) else body
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            if kind == "metadata":
                self.send_header("Metadata-Flavor", "Google")
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            with open(config_path) as f:
                config = json.load(f)
            if kind == "metadata":
                self.metadata(config)
            else:
                self.secrets(config)

        def metadata(self, config):
            if self.headers.get("Metadata-Flavor") != "Google":
                return self.reply(403, "Missing Metadata-Flavor:Google header.\n")
            path = self.path.split("?", 1)[0]
            instance = config["instances"].get(self.client_address[0], {})
            prefix = "/computeMetadata/v1/"
            if path in ("/", prefix):
                return self.reply(200, "instance/\nproject/\n")
            rest = path[len(prefix):] if path.startswith(prefix) else None
            if rest is None:
                return self.reply(404, "not found\n")
            if rest.startswith("instance/attributes/"):
                value = instance.get("attributes", {}).get(rest[len("instance/attributes/"):])
                return self.reply(404, "not found\n") if value is None else self.reply(200, value)
            if rest in ("instance/service-accounts/default/token",):
                body = json.dumps({"access_token": TOKEN, "expires_in": 3599, "token_type": "Bearer"})
                return self.reply(200, body, "application/json")
            if rest == "instance/service-accounts/default/email":
                return self.reply(200, "rehearsal@" + config["project"] + ".iam.gserviceaccount.com")
            if rest == "project/project-id":
                return self.reply(200, config["project"])
            if rest == "instance/hostname":
                return self.reply(200, instance.get("hostname", "rehearsal"))
            if rest == "instance/zone":
                return self.reply(200, "projects/0/zones/rehearsal-zone-a")
            return self.reply(404, "not found\n")

        def secrets(self, config):
            if self.headers.get("Authorization") != "Bearer " + TOKEN:
                return self.reply(401, json.dumps({"error": {"code": 401}}), "application/json")
            m = re.fullmatch(r"/v1/projects/([^/]+)/secrets/([^/]+)/versions/latest:access", self.path)
            if not m or m.group(1) != config["project"] or m.group(2) not in config["secrets"]:
                return self.reply(404, json.dumps({"error": {"code": 404}}), "application/json")
            data = base64.b64encode(config["secrets"][m.group(2)].encode()).decode()
            body = json.dumps({"name": self.path, "payload": {"data": data}}, indent=2)
            return self.reply(200, body, "application/json")

    return Handler


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--bind", required=True)
    p.add_argument("--config", required=True)
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--metadata-port", type=int, default=80)
    p.add_argument("--tls-port", type=int, default=443)
    a = p.parse_args()
    metadata = http.server.ThreadingHTTPServer((a.bind, a.metadata_port), handler(a.config, "metadata"))
    secrets = http.server.ThreadingHTTPServer((a.bind, a.tls_port), handler(a.config, "secretmanager"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(a.cert, a.key)
    secrets.socket = context.wrap_socket(secrets.socket, server_side=True)
    for server in (metadata, secrets):
        threading.Thread(target=server.serve_forever, daemon=True).start()
    print("standin: ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    sys.exit(main())
