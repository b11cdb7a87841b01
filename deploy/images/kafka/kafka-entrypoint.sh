#!/usr/bin/env bash
# Entrypoint of localhost/idemsink/kafka:4: writes server.properties, makes
# sure the KRaft storage is formatted and runs a single-node combined
# broker/controller in the foreground. Two ways to configure it:
#
# 1. The apache/kafka image's convention, chosen when KAFKA_PROCESS_ROLES is
#    set (what internal/kafkatest does, so that the same Go code runs the
#    public image and this one). Every KAFKA_<NAME> variable becomes the
#    property <name>: '_' → '.', '__' → '_', '___' → '-', lowercased
#    (KAFKA_ADVERTISED_LISTENERS → advertised.listeners); CLUSTER_ID names
#    the cluster. Unset variables take the apache/kafka image's defaults,
#    except KAFKA_LOG_DIRS (/var/lib/kafka/data, formatted at build time).
#    The *_OPTS and log4j variables the apache image excludes are not
#    properties here either; nor are this image's own knobs below.
#
# 2. Otherwise, a built-in configuration: PLAINTEXT on 9092 for the test
#    process, BROKER on 9093 for containers on the same network, the
#    controller on 127.0.0.1:9094. The advertised address of 9092 is the
#    random host port testcontainers maps it to, only known after the start,
#    so (first match wins):
#      a. KAFKA_ADVERTISED_LISTENERS  full value, e.g. PLAINTEXT://h:1234,BROKER://x:9093
#      b. KAFKA_ADVERTISED_HOST + KAFKA_ADVERTISED_PORT  (fixed host port mapping)
#      c. /tmp/advertised ("host:port\n"), written by the harness from a
#         PostStarts hook, waited for up to KAFKA_ADVERTISED_WAIT seconds (120).
#    KAFKA_NODE_ID (1) and KAFKA_CLUSTER_ID are honoured.
#
# In both: KAFKA_CFG_<NAME>=v appends property <name> ('_' → '.', lowercased,
# e.g. KAFKA_CFG_AUTO_CREATE_TOPICS_ENABLE=false); KAFKA_HEAP_OPTS (default
# -Xms256m -Xmx512m), KAFKA_JVM_OPTS and KAFKA_OPTS are JVM options. A
# cluster or node id other than the formatted one means: format afresh.
set -Eeuo pipefail

LIBS=/opt/kafka/libs
CONF=/opt/kafka/config
PROPS=$CONF/server.properties
DATA=/var/lib/kafka/data
ADV_FILE=/tmp/advertised
# The apache/kafka image's default, and the id the storage is formatted with
# at build time, so that a container start skips a JVM run (~2.5 s here).
DEFAULT_CLUSTER_ID=5L6g3nShT-eMCtK--X86sw

log() { echo "[kafka-entrypoint] $*"; }

# `kafka-entrypoint prebuild` runs at image build time and only formats the
# storage. Any other argument list is run as a command (e.g. `podman run
# ... bash`).
prebuild=
if [ "${1:-}" = prebuild ]; then prebuild=1; shift; fi
if [ "$#" -gt 0 ]; then exec "$@"; fi
if [ -n "$prebuild" ]; then export KAFKA_PROCESS_ROLES=broker,controller; fi

# KAFKA_FOO__BAR_BAZ → foo_bar.baz, as the apache/kafka image converts.
prop_name() {
  local k="$1"
  k="${k//___/$'\1'}"; k="${k//__/$'\2'}"; k="${k//_/.}"
  k="${k//$'\1'/-}"; k="${k//$'\2'/_}"
  printf '%s' "${k,,}"
}

# Variables that are not broker properties: the apache/kafka image's
# exclusions, plus this image's own knobs.
not_a_property() {
  case "$1" in
    KAFKA_VERSION|KAFKA_HEAP_OPTS|KAFKA_HEAP_OPT|KAFKA_LOG4J_OPTS|KAFKA_OPTS|KAFKA_JMX_OPTS|\
    KAFKA_JVM_PERFORMANCE_OPTS|KAFKA_GC_LOG_OPTS|KAFKA_LOG4J_ROOT_LOGLEVEL|KAFKA_LOG4J_LOGGERS|\
    KAFKA_TOOLS_LOG4J_LOGLEVEL|KAFKA_JMX_PORT|KAFKA_JMX_HOSTNAME|\
    KAFKA_JVM_OPTS|KAFKA_CLUSTER_ID|KAFKA_ADVERTISED_HOST|KAFKA_ADVERTISED_PORT|KAFKA_ADVERTISED_WAIT|\
    KAFKA_CFG_*) return 0 ;;
  esac
  return 1
}

if [ -n "${KAFKA_PROCESS_ROLES:-}" ]; then
  # --- 1. apache/kafka convention ---------------------------------------
  # Same defaults as the apache/kafka image's configureDefaults, applied
  # only to unset variables.
  : "${CLUSTER_ID:=$DEFAULT_CLUSTER_ID}"
  : "${KAFKA_NODE_ID:=1}"
  : "${KAFKA_LISTENER_SECURITY_PROTOCOL_MAP:=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,PLAINTEXT_HOST:PLAINTEXT}"
  : "${KAFKA_LISTENERS:=PLAINTEXT://localhost:29092,CONTROLLER://localhost:29093,PLAINTEXT_HOST://0.0.0.0:9092}"
  : "${KAFKA_ADVERTISED_LISTENERS:=PLAINTEXT://localhost:29092,PLAINTEXT_HOST://localhost:9092}"
  : "${KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR:=1}"
  : "${KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS:=0}"
  : "${KAFKA_TRANSACTION_STATE_LOG_MIN_ISR:=1}"
  : "${KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR:=1}"
  : "${KAFKA_CONTROLLER_QUORUM_VOTERS:=1@localhost:29093}"
  : "${KAFKA_INTER_BROKER_LISTENER_NAME:=PLAINTEXT}"
  : "${KAFKA_CONTROLLER_LISTENER_NAMES:=CONTROLLER}"
  : "${KAFKA_LOG_DIRS:=$DATA}"
  export CLUSTER_ID KAFKA_NODE_ID KAFKA_LISTENER_SECURITY_PROTOCOL_MAP KAFKA_LISTENERS \
    KAFKA_ADVERTISED_LISTENERS KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR \
    KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS KAFKA_TRANSACTION_STATE_LOG_MIN_ISR \
    KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR KAFKA_CONTROLLER_QUORUM_VOTERS \
    KAFKA_INTER_BROKER_LISTENER_NAME KAFKA_CONTROLLER_LISTENER_NAMES KAFKA_LOG_DIRS
  cluster_id="$CLUSTER_ID"
  node_id="$KAFKA_NODE_ID"
  log_dirs="$KAFKA_LOG_DIRS"
  : > "$PROPS"
  while IFS= read -r -d '' kv; do
    name="${kv%%=*}"
    case "$name" in KAFKA_?*) ;; *) continue ;; esac
    not_a_property "$name" && continue
    printf '%s=%s\n' "$(prop_name "${name#KAFKA_}")" "${kv#*=}" >> "$PROPS"
  done < <(env -0)
  log "configured from KAFKA_* variables (apache/kafka convention)"
else
  # --- 2. built-in configuration ------------------------------------------
  cluster_id="${KAFKA_CLUSTER_ID:-}"   # empty: keep the formatted one
  node_id="${KAFKA_NODE_ID:-1}"
  log_dirs="$DATA"
  internal_host="$(hostname)"
  if [ -n "${KAFKA_ADVERTISED_LISTENERS:-}" ]; then
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

  cat > "$PROPS" <<PROPS
process.roles=broker,controller
node.id=$node_id
controller.quorum.voters=$node_id@127.0.0.1:9094
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
fi

# KAFKA_CFG_* overrides; later lines win in java.util.Properties.
while IFS= read -r -d '' kv; do
  name="${kv%%=*}"
  case "$name" in KAFKA_CFG_?*) ;; *) continue ;; esac
  key="$(printf '%s' "${name#KAFKA_CFG_}" | tr '[:upper:]_' '[:lower:].')"
  printf '%s=%s\n' "$key" "${kv#*=}" >> "$PROPS"
done < <(env -0)

# shellcheck disable=SC2206  # the *_OPTS variables are word-split on purpose
java_opts=(${KAFKA_HEAP_OPTS:--Xms256m -Xmx512m}
  # C1 only: a test broker lives for seconds to minutes, so faster JIT
  # warm-up beats peak throughput (measured: shorter time to "started").
  -XX:TieredStopAtLevel=1
  -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:+ExitOnOutOfMemoryError
  -Djava.awt.headless=true -Dlog4j2.configurationFile="$CONF/log4j2.properties"
  ${KAFKA_JVM_OPTS:-} ${KAFKA_OPTS:-})

# Storage: reuse what is formatted when it belongs to this cluster and node;
# otherwise wipe it and format afresh.
IFS=, read -r -a dirs <<< "$log_dirs"
need_format=
for d in "${dirs[@]}"; do
  meta="$d/meta.properties"
  if [ -f "$meta" ]; then
    if { [ -n "$cluster_id" ] && ! grep -qx "cluster.id=$cluster_id" "$meta"; } \
       || ! grep -qx "node.id=$node_id" "$meta"; then
      log "storage in $d belongs to another cluster or node; formatting afresh"
      rm -rf "${d:?}"/*
      need_format=1
    fi
  else
    mkdir -p "$d"; need_format=1
  fi
done
if [ -n "$need_format" ]; then
  : "${cluster_id:=$DEFAULT_CLUSTER_ID}"
  # StorageTool lives in core (kafka.tools) in 4.0/4.1; try the tools jar too.
  ok=
  for cls in kafka.tools.StorageTool org.apache.kafka.tools.StorageTool; do
    if java "${java_opts[@]}" -cp "$LIBS/*" "$cls" format -t "$cluster_id" \
         -c "$PROPS" --ignore-formatted; then ok=1; break; fi
  done
  [ -n "$ok" ] || { log "error: storage format failed"; exit 1; }
fi
if [ -n "$prebuild" ]; then exit 0; fi

exec java "${java_opts[@]}" -cp "$LIBS/*" kafka.Kafka "$PROPS"
