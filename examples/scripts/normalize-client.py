#!/usr/bin/env python3
"""An example before-stage script handler for provisio: trims the client's
name, and forbids a name that is empty.

    cp examples/scripts/normalize-client.py scripts/
    curl -s -H "Authorization: Bearer $TOKEN" localhost:8080/api/v1/handlers \
      -d '{"name": "Normalize", "events_id": "clients.create", "stage": "before",
           "kind": "script", "target": "normalize-client.py"}'

The payload arrives on stdin; what the script prints is its reply, read like an
HTTP handler's body: {"data": {...}} replaces the data, {"allow": false,
"reason": "..."} forbids the action, anything else leaves the data as it was.
"""

import json
import sys

payload = json.load(sys.stdin)
data = payload["data"]
name = str(data.get("name", "")).strip()
if not name:
    print(json.dumps({"allow": False, "reason": "a client needs a name"}))
else:
    print(json.dumps({"data": dict(data, name=name)}))
