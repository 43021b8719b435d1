#!/usr/bin/env bash
# Entry point of the compose stack's RabbitMQ: writes the fleet's users from the environment into the
# definitions directory, then starts the image's own entry point. Passwords never enter a committed file.
#
# Permissions are the least-privilege ones of deploy/README.md, derived from the names in topology.json.
set -euo pipefail

: "${BROKER_ADMIN_PASSWORD:?must be set}"
: "${BROKER_WORKER_PASSWORD:?must be set}"
: "${BROKER_SIMULATOR_PASSWORD:?must be set}"

target=/etc/rabbitmq/definitions.d/10-users.json
python3 - "$target" <<'PY'
import json, os, sys

fleet_names = r"^(fleet\..*|domain\.events|domain\.events\.stream|legacy\.payments|process\.events)$"
definitions = {
    "vhosts": [{"name": "/"}],
    "users": [
        {"name": "fleet-admin", "password": os.environ["BROKER_ADMIN_PASSWORD"], "tags": ["administrator"]},
        {"name": "fleet-worker", "password": os.environ["BROKER_WORKER_PASSWORD"], "tags": []},
        {"name": "fleet-simulator", "password": os.environ["BROKER_SIMULATOR_PASSWORD"], "tags": []},
    ],
    "permissions": [
        {"user": "fleet-admin", "vhost": "/", "configure": ".*", "write": ".*", "read": ".*"},
        {"user": "fleet-worker", "vhost": "/", "configure": fleet_names, "write": fleet_names, "read": fleet_names},
        # The simulator publishes domain events and watches process events through a server-named queue.
        {"user": "fleet-simulator", "vhost": "/",
         "configure": r"^amq\.gen-.*$",
         "write": r"^(domain\.events|legacy\.payments|amq\.gen-.*)$",
         "read": r"^(process\.events|amq\.gen-.*)$"},
    ],
}
with open(sys.argv[1], "w") as out:
    json.dump(definitions, out, indent=2)
PY
chmod 0640 "$target"
chgrp rabbitmq "$target"

exec docker-entrypoint.sh rabbitmq-server
