#!/usr/bin/env python3
"""A stand-in for a softswitch's REST API, with Python's standard library only:
what examples/softswitch/handler.json provisions without an adapter.

    python3 examples/softswitch/switch.py --port 9200 [--secret whsec_...]

    POST   /api/v2/customers        create a customer ({"id", "name", ...})
    PUT    /api/v2/customers/{id}   replace a customer's fields
    DELETE /api/v2/customers/{id}   remove a customer
    GET    /api/v2/customers        every customer, as JSON
    GET    /calls                   every call received, as "METHOD path" lines

With --secret (the handler's whsec_ secret) it refuses, with 401, any call
whose Standard Webhooks signature does not verify.
"""

import argparse
import base64
import hashlib
import hmac
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CUSTOMER = re.compile(r"^/api/v2/customers/([^/]+)$")


def verified(secret, headers, body):
    """The Standard Webhooks check: HMAC-SHA256 of "id.timestamp.body"."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    signed = f"{headers.get('webhook-id')}.{headers.get('webhook-timestamp')}.".encode() + body
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    given = (headers.get("webhook-signature") or "").split(" ")
    return any(hmac.compare_digest(s, f"v1,{expected}") for s in given)


def serve(port, secret):
    customers, calls, lock = {}, [], threading.Lock()

    class Switch(BaseHTTPRequestHandler):
        def answer(self, status, body=None):
            data = b"" if body is None else json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def change(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            if secret and not verified(secret, self.headers, body):
                return self.answer(401, {"error": "bad signature"})
            fields = json.loads(body) if body else {}
            match = CUSTOMER.match(self.path)
            with lock:
                calls.append(f"{self.command} {self.path}")
                if self.command == "POST" and self.path == "/api/v2/customers":
                    customers[str(fields["id"])] = fields
                    return self.answer(201, fields)
                if match and self.command == "PUT":
                    customers[match[1]] = {**fields, "id": fields.get("id", match[1])}
                    return self.answer(200, customers[match[1]])
                if match and self.command == "DELETE":
                    customers.pop(match[1], None)
                    return self.answer(204)
            return self.answer(404, {"error": "no such route"})

        do_POST = do_PUT = do_DELETE = change

        def do_GET(self):
            with lock:
                if self.path == "/api/v2/customers":
                    return self.answer(200, customers)
                if self.path == "/calls":
                    return self.answer(200, calls)
            self.answer(404, {"error": "no such route"})

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Switch)
    print(f"softswitch listening on http://127.0.0.1:{server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--secret")
    args = parser.parse_args()
    serve(args.port, args.secret)
