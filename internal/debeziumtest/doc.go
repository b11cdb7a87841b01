// Package debeziumtest is the real-Debezium tier (make test-debezium): a
// PostgreSQL source with wal_level=logical, the Debezium PostgreSQL connector
// in a Kafka Connect worker (scripts/connect) on the tier's Kafka broker, and
// the idemsink daemon, killed mid-stream and restarted, writing the change
// events into a target database. The test compares source and target tables
// column by column for both JSON flavours (with and without the schema
// envelope).
//
// The test is built only with the tag debezium: it needs the Connect worker
// (CONNECT_URL) and the broker (KAFKA_BROKERS) that scripts/test-debezium
// starts, so it fails, never skips, when they are missing, and make test
// does not build it. This file holds the worker's REST client.
package debeziumtest
