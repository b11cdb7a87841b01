#!/bin/sh
# Stands in for the Kafka distribution's bin/kafka-broker-api-versions.sh (the image holds the jars
# from Maven Central, not the distribution's scripts), at the path the
# apache/kafka image has it, so that deploy/compose.yaml runs on either image.
exec java ${KAFKA_TOOL_OPTS:--Xmx256m -XX:TieredStopAtLevel=1 -XX:+UseSerialGC} -cp '/opt/kafka/libs/*' org.apache.kafka.tools.BrokerApiVersionsCommand "$@"
