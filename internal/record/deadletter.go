package record

import (
	"errors"
	"fmt"
	"strings"
)

// DeadLetter is a record that cannot be applied, kept with its raw bytes.
type DeadLetter struct {
	Pos     Position
	Key     []byte
	Value   []byte
	Headers map[string]string
	Reason  string
}

// Classes of bad input. Every dead-letter reason starts with its class and
// a colon, so that `consumer dlq list --reason invalid-text` finds them all.
const (
	ClassOversize  = "oversize"       // key plus value over max_record_bytes
	ClassTombstone = "tombstone"      // a delete (null value, Debezium op d) not applied, or without a usable key
	ClassMalformed = "malformed-json" // not JSON, truncated, trailing data
	ClassNotObject = "not-an-object"  // JSON, but an array, string, number or null
	ClassText      = "invalid-text"   // invalid UTF-8, a lone surrogate, NUL
	ClassMissing   = "missing-field"  // a required field is absent or null
	ClassType      = "wrong-type"     // a value of the wrong JSON type or syntax
	ClassRange     = "out-of-range"   // does not fit the column's type and modifiers
	ClassRefused   = "refused-by-postgres"
	// Classes of the registry formats and Debezium (format.go).
	ClassPayload = "malformed-payload" // no Confluent wire-format header, or Avro/Protobuf that does not decode
	ClassSchema  = "schema"            // the writer schema is unknown to the registry (404), unusable, or of another format
	ClassEvent   = "debezium-event"    // a Debezium event without its source position, its after row, or a known op
)

// Classes lists every class in the order the README documents them.
var Classes = []string{ClassOversize, ClassTombstone, ClassMalformed, ClassNotObject, ClassText,
	ClassMissing, ClassType, ClassRange, ClassRefused, ClassPayload, ClassSchema, ClassEvent}

// ClassOf returns the class a dead-letter reason starts with, or "".
func ClassOf(reason string) string {
	c, _, ok := strings.Cut(reason, ":")
	if !ok {
		return ""
	}
	for _, k := range Classes {
		if c == k {
			return c
		}
	}
	return ""
}

// KeptBytes is how much of an oversize record's key and value is kept in
// its dead letter: enough to recognise it, not enough to fill the table.
const KeptBytes = 1024

// DeadLetterFor is the dead letter of a record that failed to decode with
// err. An oversize record keeps only its first KeptBytes of key and value;
// its reason gives the full sizes.
func DeadLetterFor(pos Position, key, value []byte, err error) DeadLetter {
	var br *BadRecord
	if errors.As(err, &br) && br.Class == ClassOversize {
		key, value = key[:min(len(key), KeptBytes)], value[:min(len(value), KeptBytes)]
	}
	return DeadLetter{Pos: pos, Key: key, Value: value, Reason: err.Error()}
}

// BadRecord is why a record cannot be applied; it is dead-lettered.
type BadRecord struct {
	// Class is one of Classes: what kind of bad input this is.
	Class string
	// Reason starts with the class and says what was expected and where.
	Reason string
}

func (e *BadRecord) Error() string { return e.Reason }

// Bad builds a BadRecord. The reason is stored in a text column, so it is
// made valid UTF-8 without NUL whatever the record held.
func Bad(class, format string, args ...any) error {
	r := class + ": " + fmt.Sprintf(format, args...)
	r = strings.ReplaceAll(strings.ToValidUTF8(r, "\ufffd"), "\x00", `\x00`)
	return &BadRecord{Class: class, Reason: r}
}
