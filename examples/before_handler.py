#!/usr/bin/env python3
"""An example before-stage HTTP handler for provisio, with Python's standard
library only.

    python3 examples/before_handler.py --port 9100 [--secret whsec_...]

Register it (stage "before") for clients.create and clients.update:

    curl -s -H "Authorization: Bearer $TOKEN" localhost:8080/api/v1/handlers \
      -d '{"name": "Client rules", "events_id": "clients.*", "stage": "before",
           "target": "http://127.0.0.1:9100/"}'

Then ask provisio whether an action may go ahead:

    curl -s -H "Authorization: Bearer $TOKEN" localhost:8080/api/v1/events/before \
      -d '{"events_id": "clients.create", "object_id": 12, "data": {"name": "ACME", "email": "Ops@ACME.example"}}'

It forbids a client without a name and lower-cases the e-mail address. With
--secret (the handler's whsec_ secret), it rejects requests whose Standard
Webhooks signature does not verify.
"""

import argparse
import base64
import hashlib
import hmac
import json
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def signature_ok(secret, headers, body):
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    expected = "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    return any(hmac.compare_digest(expected, s) for s in headers.get("webhook-signature", "").split())


def decide(payload):
    """Returns the reply: forbid, changed data, or nothing to change."""
    data = payload["data"]
    if payload["event"]["events_id"] == "clients.create" and not str(data.get("name", "")).strip():
        return {"allow": False, "reason": "a client needs a name"}
    if "email" in data:
        data = dict(data, email=str(data["email"]).lower())
        return {"data": data}
    return {}


class Handler(BaseHTTPRequestHandler):
    secret = None

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", 0)))
        if self.secret and not signature_ok(self.secret, self.headers, body):
            self.send_response(401)
            self.end_headers()
            return
        reply = json.dumps(decide(json.loads(body))).encode()
        self.send_response(200)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(reply)))
        self.end_headers()
        self.wfile.write(reply)

    def log_message(self, *args):
        pass


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--secret", help="the handler's whsec_ signing secret")
    args = parser.parse_args()
    Handler.secret = args.secret
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    print(f"before-stage handler on http://127.0.0.1:{server.server_port}/", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
