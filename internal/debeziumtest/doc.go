// Package debeziumtest is the real-Debezium tier (make test-debezium): a
// PostgreSQL source with wal_level=logical and a MariaDB source with the
// binary log, Debezium's connectors in a Kafka Connect worker
// (scripts/connect) on the tier's Kafka broker, and the idemsink daemon,
// killed mid-stream and restarted, writing the change events into a target
// database. The tests compare source and target tables column by column,
// for PostgreSQL in both JSON flavours (with and without the schema
// envelope, and without it with decimals as strings), and pass only when
// no row differs.
//
// The tests are built only with the tag debezium: they need the Connect
// worker (CONNECT_URL) and the broker (KAFKA_BROKERS) that
// scripts/test-debezium starts, so they fail, never skip, when those are
// missing, and make test does not build them. The package holds the
// worker's REST client (connect.go) and the throwaway MariaDB server
// (mariadb.go).
package debeziumtest
