#!/usr/bin/env bash
# Entrypoint of localhost/idemsink/kafka:4: formats KRaft storage and runs a
# single-node combined broker/controller in the foreground.
#
# The client listener must advertise the address the *test process* dials,
# i.e. the random host port testcontainers maps 9092 to, which is only known
# after the container has started. So, unless it is given up front, the
# entrypoint waits for /tmp/advertised ("host:port\n"), which the harness
# writes from a PostStarts lifecycle hook (same idea as testcontainers'
# kafka module and its starter script). Sources, first match wins:
#   1. KAFKA_ADVERTISED_LISTENERS  full value, e.g. PLAINTEXT://h:1234,BROKER://x:9093
#   2. KAFKA_ADVERTISED_HOST + KAFKA_ADVERTISED_PORT  (fixed host port mapping)
#   3. /tmp/advertised, waited for up to KAFKA_ADVERTISED_WAIT seconds (120)
# Other knobs: KAFKA_CLUSTER_ID, KAFKA_NODE_ID (1), KAFKA_HEAP_OPTS,
# KAFKA_CFG_<NAME>=v → server property <name> with '_' → '.', lowercased
# (e.g. KAFKA_CFG_AUTO_CREATE_TOPICS_ENABLE=false).
set -Eeuo pipefail

LIBS=/opt/kafka/libs
CONF=/opt/kafka/config
DATA=/var/lib/kafka/data
ADV_FILE=/tmp/advertised
NODE_ID="${KAFKA_NODE_ID:-1}"

log() { echo "[kafka-entrypoint] $*"; }

# `kafka-entrypoint prebuild` runs at image build time: it formats the
# storage once so that a container start saves a JVM run (~2.5 s here). The
# format does not depend on the advertised listeners. Any other argument
# list is run as a command (e.g. `podman run ... bash`).
prebuild=
if [ "${1:-}" = prebuild ]; then prebuild=1; shift; fi
if [ "$#" -gt 0 ]; then exec "$@"; fi

internal_host="$(hostname)"
if [ -n "$prebuild" ]; then
  advertised="PLAINTEXT://localhost:9092,BROKER://localhost:9093"
elif [ -n "${KAFKA_ADVERTISED_LISTENERS:-}" ]; then
  advertised="$KAFKA_ADVERTISED_LISTENERS"
elif [ -n "${KAFKA_ADVERTISED_HOST:-}" ] && [ -n "${KAFKA_ADVERTISED_PORT:-}" ]; then
  advertised="PLAINTEXT://$KAFKA_ADVERTISED_HOST:$KAFKA_ADVERTISED_PORT,BROKER://$internal_host:9093"
else
  log "waiting for $ADV_FILE (host:port of the client listener)"
  deadline=$((SECONDS + ${KAFKA_ADVERTISED_WAIT:-120}))
  # A complete line (trailing newline) means the writer has finished.
  until [ -f "$ADV_FILE" ] && [ "$(wc -l < "$ADV_FILE")" -ge 1 ]; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      log "error: $ADV_FILE not written in time; set KAFKA_ADVERTISED_HOST/PORT or write it from a PostStarts hook"
      exit 1
    fi
    sleep 0.1
  done
  hp="$(head -n1 "$ADV_FILE" | tr -d '[:space:]')"
  [[ "$hp" =~ ^[^:]+:[0-9]+$ ]] || { log "error: bad $ADV_FILE content: '$hp'"; exit 1; }
  advertised="PLAINTEXT://$hp,BROKER://$internal_host:9093"
fi
log "advertised.listeners=$advertised"

cat > "$CONF/server.properties" <<PROPS
process.roles=broker,controller
node.id=$NODE_ID
controller.quorum.voters=$NODE_ID@127.0.0.1:9094
listeners=PLAINTEXT://0.0.0.0:9092,BROKER://0.0.0.0:9093,CONTROLLER://127.0.0.1:9094
advertised.listeners=$advertised
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,BROKER:PLAINTEXT,CONTROLLER:PLAINTEXT
controller.listener.names=CONTROLLER
inter.broker.listener.name=BROKER
log.dirs=$DATA
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
offsets.topic.num.partitions=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
PROPS
# KAFKA_CFG_* overrides; later lines win in java.util.Properties.
while IFS='=' read -r name value; do
  key="$(printf '%s' "${name#KAFKA_CFG_}" | tr '[:upper:]_' '[:lower:].')"
  printf '%s=%s\n' "$key" "$value" >> "$CONF/server.properties"
done < <(env | grep '^KAFKA_CFG_' || true)

# shellcheck disable=SC2206  # the *_OPTS variables are word-split on purpose
java_opts=(${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
  # C1 only: a test broker lives for seconds to minutes, so faster JIT
  # warm-up beats peak throughput (measured: shorter time to "started").
  -XX:TieredStopAtLevel=1
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
  -Djava.awt.headless=true -Dlog4j2.configurationFile="$CONF/log4j2.properties"
  ${KAFKA_JVM_OPTS:-})

# A cluster id other than the pre-formatted one means: format afresh.
if [ -n "${KAFKA_CLUSTER_ID:-}" ] && [ -f "$DATA/meta.properties" ] \
   && ! grep -qx "cluster.id=$KAFKA_CLUSTER_ID" "$DATA/meta.properties"; then
  rm -rf "${DATA:?}"/*
fi
if [ ! -f "$DATA/meta.properties" ]; then
  cluster_id="${KAFKA_CLUSTER_ID:-$(head -c 16 /dev/urandom | base64 | tr '+/' '-_' | tr -d '=')}"
  # StorageTool lives in core (kafka.tools) in 4.0/4.1; try the tools jar too.
  ok=
  for cls in kafka.tools.StorageTool org.apache.kafka.tools.StorageTool; do
    if java "${java_opts[@]}" -cp "$LIBS/*" "$cls" format -t "$cluster_id" \
         -c "$CONF/server.properties" --ignore-formatted; then ok=1; break; fi
  done
  [ -n "$ok" ] || { log "error: storage format failed"; exit 1; }
fi
if [ -n "$prebuild" ]; then exit 0; fi

exec java "${java_opts[@]}" -cp "$LIBS/*" kafka.Kafka "$CONF/server.properties"
