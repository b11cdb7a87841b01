#!/bin/sh
# deploy/compose/topics.sh — the compose stack's one-shot topic creation
# (service `topics` in ../compose.yaml), run in the Kafka image:
#
#   topics.sh --topic NAME [kafka-topics.sh --create options...]
#
# Waits, with one deadline for all of it (TOPICS_WAIT_SECONDS, 120), until
#   1. the broker's host name resolves (getent, where the image has it),
#   2. the broker answers (kafka-broker-api-versions.sh),
#   3. the topic is created (--if-not-exists: a rerun is harmless),
# retrying each step, and prints what it waited for and how long. A container
# just started on a compose network can fail to resolve its peers for a
# moment ("No resolvable bootstrap urls given in bootstrap.servers"), so a
# single attempt is not enough. Env: BOOTSTRAP (kafka:9092).
set -u
BOOTSTRAP="${BOOTSTRAP:-kafka:9092}"
HOST="${BOOTSTRAP%:*}"
WAIT="${TOPICS_WAIT_SECONDS:-120}"
BIN="${KAFKA_BIN:-/opt/kafka/bin}"

# Centiseconds since boot, from /proc/uptime (no date +%N in every image).
now() { read -r up _ </proc/uptime; echo "${up%.*}${up#*.}"; }
T0="$(now)"
secs() { t=$(($(now) - T0)); printf '%d.%02d' $((t / 100)) $((t % 100)); }
log() { echo "topics: $*" >&2; }
# step WHAT CMD...: runs CMD until it succeeds or the deadline passes.
step() {
	what="$1" n=1 s0="$(now)"
	shift
	until "$@" >/tmp/topics.out 2>&1; do
		if [ $(($(now) - T0)) -ge $((WAIT * 100)) ]; then
			log "gave up waiting for $what after $(secs) s ($n attempts); last output:"
			tail -n 5 /tmp/topics.out >&2
			exit 1
		fi
		n=$((n + 1))
		sleep 1
	done
	t=$(($(now) - s0))
	log "$what: after $(printf '%d.%02d' $((t / 100)) $((t % 100))) s, $n attempt(s)"
}

if command -v getent >/dev/null 2>&1; then
	step "$HOST resolves" getent hosts "$HOST"
fi
step "broker $BOOTSTRAP answers" "$BIN/kafka-broker-api-versions.sh" --bootstrap-server "$BOOTSTRAP"
step "topic created ($*)" "$BIN/kafka-topics.sh" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists "$@"
cat /tmp/topics.out
log "done in $(secs) s"
