package record

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5/pgtype"
)

// ID is a record_id: the first 128 bits of a SHA-256 over the canonical
// encoding of the key columns. It is stored as a PostgreSQL uuid.
type ID [16]byte

func (id ID) String() string { return hex.EncodeToString(id[:]) }

// idDomain separates record ids from any other use of SHA-256 and versions
// the encoding: changing it is a migration, so it is pinned by the golden
// vectors in testdata/record_ids.json.
const idDomain = "idemsink/record_id/v1"

// Type tags of the canonical encoding. The integer types share one tag: an
// integer key keeps its id when its column widens from integer to bigint.
const (
	tagText      = 't'
	tagInt       = 'i'
	tagNumeric   = 'n'
	tagBool      = 'b'
	tagDate      = 'd'
	tagTimestamp = 'T'
	tagUUID      = 'u'
)

// RecordID hashes key values of the given column types, in key order. The
// values are those convert produces, so the id depends on the typed value
// (1, 1.0 and "1" in a bigint column are one key), never on its spelling.
func RecordID(types []string, values []any) ID {
	var buf [256]byte
	b := append(buf[:0], idDomain...)
	b = binary.AppendUvarint(b, uint64(len(values)))
	for i, v := range values {
		b = appendCanonical(b, types[i], v)
	}
	sum := sha256.Sum256(b)
	var id ID
	copy(id[:], sum[:16])
	return id
}

func appendCanonical(b []byte, typ string, v any) []byte {
	switch x := v.(type) {
	case string:
		b = append(b, tagText)
		b = binary.AppendUvarint(b, uint64(len(x)))
		return append(b, x...)
	case int64:
		return binary.BigEndian.AppendUint64(append(b, tagInt), uint64(x))
	case int32:
		return binary.BigEndian.AppendUint64(append(b, tagInt), uint64(int64(x)))
	case int16:
		return binary.BigEndian.AppendUint64(append(b, tagInt), uint64(int64(x)))
	case Numeric:
		x = x.Canonical() // the value, not the scale it was staged with
		b = append(b, tagNumeric)
		b = binary.AppendUvarint(b, uint64(len(x)))
		return append(b, x...)
	case bool:
		if x {
			return append(b, tagBool, 1)
		}
		return append(b, tagBool, 0)
	case time.Time:
		if typ == "date" {
			return binary.BigEndian.AppendUint64(append(b, tagDate), uint64(x.Unix()/86400))
		}
		return binary.BigEndian.AppendUint64(append(b, tagTimestamp), uint64(x.UnixMicro()))
	case [16]byte:
		return append(append(b, tagUUID), x[:]...)
	case json.RawMessage, float64, nil:
		// Config validation refuses these as key types.
		panic(fmt.Sprintf("record id: %T has no canonical encoding", v))
	}
	panic(fmt.Sprintf("record id: unexpected %T", v))
}

// UUIDValue lets pgx encode an ID as a PostgreSQL uuid.
func (id ID) UUIDValue() (pgtype.UUID, error) { return pgtype.UUID{Bytes: id, Valid: true}, nil }
