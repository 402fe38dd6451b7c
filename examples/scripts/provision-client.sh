#!/bin/sh
# An example after-stage script handler for provisio.
#
# Copy it into the scripts directory (./scripts by default) and register it:
#
#   cp examples/scripts/provision-client.sh scripts/
#   curl -s -H "Authorization: Bearer $TOKEN" localhost:8080/api/v1/handlers \
#     -d '{"name": "Provision log", "events_id": "clients.*", "kind": "script",
#          "target": "provision-client.sh", "args": ["provisioned.log"]}'
#
# provisio runs it directly (no shell in between) from inside the scripts
# directory, with the payload on stdin and only PATH and PROVISIO_* variables
# in its environment. Exit 0 means success; anything else is retried on the
# schedule, in order per object.
set -eu

log=${1:-provisioned.log}
payload=$(cat)

# A real script would call the softswitch's own CLI here. This one records
# what it was asked to do, one line per event.
printf '%s %s object=%s %s\n' "$PROVISIO_EVENT_ID" "$PROVISIO_EVENTS_ID" "$PROVISIO_OBJECT_ID" "$payload" >> "$log"
echo "ok"
