# Shared settings for the local RabbitMQ and PostgreSQL that tests, benchmarks and the demo use.
# Source it; every value can be overridden from the environment.
: "${FLEET_RUN_DIR:=/tmp/processfleet}"
: "${RABBITMQ_PORT:=5672}"
: "${RABBITMQ_TLS_PORT:=5671}"
: "${RABBITMQ_MANAGEMENT_PORT:=15672}"
: "${RABBITMQ_DIST_PORT:=25672}"
: "${RABBITMQ_NODE:=fleet@localhost}"
: "${POSTGRES_PORT:=5432}"
: "${POSTGRES_USER:=fleet}"
: "${POSTGRES_PASSWORD:=fleet}"
: "${POSTGRES_DB:=fleet}"
RABBITMQ_DIR="$FLEET_RUN_DIR/rabbitmq"
POSTGRES_DIR="$FLEET_RUN_DIR/postgres"
RABBITMQ_BIN=/usr/lib/rabbitmq/bin
# An Erlang VM that crashes (the node, or a rabbitmqctl call) writes its dump here, not into the caller's folder.
: "${ERL_CRASH_DUMP:=$FLEET_RUN_DIR/erl_crash.dump}"
: "${AMQP_URL:=amqp://guest:guest@127.0.0.1:${RABBITMQ_PORT}/}"
: "${POSTGRES_URL:=postgres://${POSTGRES_USER}:${POSTGRES_PASSWORD}@127.0.0.1:${POSTGRES_PORT}/${POSTGRES_DB}}"
export FLEET_RUN_DIR RABBITMQ_PORT RABBITMQ_TLS_PORT RABBITMQ_MANAGEMENT_PORT RABBITMQ_DIST_PORT RABBITMQ_NODE
export ERL_CRASH_DUMP POSTGRES_PORT POSTGRES_USER POSTGRES_PASSWORD POSTGRES_DB AMQP_URL POSTGRES_URL

# rabbitmqctl against the local node (same cookie, same node name).
fleet_rabbitmqctl() {
  HOME="$RABBITMQ_DIR" RABBITMQ_NODENAME="$RABBITMQ_NODE" "$RABBITMQ_BIN/rabbitmqctl" "$@"
}
