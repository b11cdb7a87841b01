// Package decode turns the raw bytes of a Kafka record into a typed row of
// its pipeline's target table, or into the reason it is bad input.
//
// # One path for every format
//
// A record first loses its format (decode.go, Decode): plain JSON
// (json.go, a scanner that keeps only the fields the pipeline reads), the
// Confluent wire format of the schema registry's Avro (avro.go), Protobuf
// (protobuf.go) and JSON Schema, and Debezium change events (debezium.go),
// all become one JSON-shaped message. From there every format shares one
// typed conversion (convert.go, convert) with the strict checks of what a
// PostgreSQL column can hold (fit.go: lengths, precision and scale,
// timestamp range, text without NUL), one target date, one version and one
// record id (record.RecordID).
//
// # Bad input
//
// A record that cannot be decoded, keyed, dated or stored returns a
// *record.BadRecord whose reason starts with its class (record.Classes);
// the caller dead-letters it with record.DeadLetterFor. strict.go holds the
// checks made before any decoding (size, well-formed JSON, valid text). An
// unreachable schema registry is not bad input: Unavailable reports it, and
// the caller holds the partition back and asks again (registry.go).
package decode
