package sink

// The stage is filled with binary COPY written here, not with pgx.CopyFrom
// as the style guide would have it, because encoding the COPY was a
// quarter of the consumer's CPU: in profiles of the bench's first load
// (go run ./cmd/bench -records 300000 -scenarios 1 -cpuprofile F; F.s1,
// three runs) pgx's copyFrom.buildCopyBuf took 0.55-0.70 s of the
// consumer's 2.26-2.71 s (24-26%). For every value pgx looks up an encode
// plan (Map.Encode → PlanEncode), checks for a nil driver.Valuer and
// encodes numeric through math/big (NumericValuer); rowSource boxed the
// metadata columns into a []any per row; and pgx asks the server for the
// stage's column types before each COPY, which the pipeline already says.
//
// This file writes PostgreSQL's binary COPY format itself: hand-written
// encoders for the Go types internal/decode hands (record.Numeric goes
// straight from its decimal digits to base-10000 ones), and, for any other
// Go type or column type, pgx's own codecs through an encode plan resolved
// once per column and Go type, never once per value. Per row of the
// bench's orders pipeline (BenchmarkCopyEncode, same process, 2 CPUs):
//
//	pgx.CopyFrom's encoding (before)         1260-1470 ns/row  391 B  17 allocs
//	pgx's plans, resolved once per column     690-800 ns/row   335 B  13 allocs
//	hand-written, falling back to the plans   100-110 ns/row     0 B   0 allocs
//
// The hand-written encoders are what the sink runs. With them the same
// profiles spend 0.06-0.10 s of the consumer's 1.87-2.39 s in COPY
// (pgconn's reader and sender, encoding included: 3-5%), and the bench's
// consumer CPU per million records went from 7.6-9.3 s to 6.3-8.2 s.
// TestCopyRoundTrip checks them, and the plans, against pgx.CopyFrom for
// every column type.
//
// The rows are encoded on demand as pgconn reads them, into a buffer of
// about one read (pgconn's 64 KiB message) plus one row, so that memory stays
// bounded whatever the batch size and every CopyData message but the last
// is full.

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"reflect"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// copyStage streams rows into the stage with binary COPY.
func copyStage(ctx context.Context, tx pgx.Tx, st *statements, rows []batch.Dated, ids []record.ID) (int64, error) {
	conn := tx.Conn()
	return newRowEncoder(conn.TypeMap(), st.stageOIDs, st.unavailable).copyRows(ctx, conn.PgConn(), st.copyStage, rows, ids)
}

// copyRows runs the COPY statement sql with rows as its data and returns the
// number of rows the server took.
func (e *rowEncoder) copyRows(ctx context.Context, conn *pgconn.PgConn, sql string, rows []batch.Dated, ids []record.ID) (int64, error) {
	r := &copyReader{enc: e, rows: rows, ids: ids}
	tag, err := conn.CopyFrom(ctx, r, sql)
	if r.err != nil {
		// The server's error only says that the client failed the copy.
		return 0, r.err
	}
	if err != nil {
		return 0, err
	}
	return tag.RowsAffected(), nil
}

// copyReader is the COPY data of rows, encoded as it is read.
type copyReader struct {
	enc  *rowEncoder
	rows []batch.Dated
	ids  []record.ID // batch id per batch index
	next int         // the next row to encode
	buf  []byte      // encoded, from off on not read yet
	off  int
	done bool // the trailer is in buf
	err  error
}

// copyHeader starts binary COPY data: the signature, the flags (no OIDs)
// and the length of the header extension (none).
const copyHeader = "PGCOPY\n\377\r\n\000" + "\000\000\000\000" + "\000\000\000\000"

func (r *copyReader) Read(p []byte) (int, error) {
	if r.err != nil {
		return 0, r.err
	}
	// Keep what is left of the last read, and encode rows until p can be
	// filled: pgconn sends each read as one CopyData message.
	r.buf = r.buf[:copy(r.buf, r.buf[r.off:])]
	r.off = 0
	if r.buf == nil {
		r.buf = append(make([]byte, 0, len(p)+4096), copyHeader...)
	}
	for len(r.buf) < len(p) && !r.done {
		if r.next == len(r.rows) {
			r.buf = binary.BigEndian.AppendUint16(r.buf, 0xffff)
			r.done = true
			break
		}
		row := r.rows[r.next]
		var err error
		if r.buf, err = r.enc.appendRow(r.buf, row.Row, r.ids[row.Batch]); err != nil {
			r.err = fmt.Errorf("encode row at %s offset %d: %w", row.Pos.TP, row.Pos.Offset, err)
			return 0, r.err
		}
		r.next++
	}
	if len(r.buf) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.buf)
	r.off = n
	return n, nil
}

// rowEncoder encodes stage rows: record_id, the pipeline's columns, the
// position and batch id, and, for Debezium pipelines, the unavailable
// columns.
type rowEncoder struct {
	m           *pgtype.Map
	cols        []columnEncoder // the pipeline's columns
	fields      int16
	unavailable bool
	// plansOnly encodes every column through pgx's plans, for the
	// benchmark and the tests of that path.
	plansOnly bool
}

// newRowEncoder encodes the columns of oids, the stage's types (see
// statements.stageOIDs), falling back to m's codecs.
func newRowEncoder(m *pgtype.Map, oids []uint32, unavailable bool) *rowEncoder {
	e := &rowEncoder{m: m, fields: int16(len(oids)), unavailable: unavailable}
	n := len(oids) - 6 // record_id and the five metadata columns
	if unavailable {
		n--
	}
	for _, oid := range oids[1 : 1+n] {
		e.cols = append(e.cols, columnEncoder{oid: oid})
	}
	return e
}

func (e *rowEncoder) appendRow(buf []byte, r *record.Row, batchID record.ID) ([]byte, error) {
	if len(r.Values) != len(e.cols) {
		return buf, fmt.Errorf("%d values for %d columns", len(r.Values), len(e.cols))
	}
	buf = binary.BigEndian.AppendUint16(buf, uint16(e.fields))
	buf = appendUUID(buf, r.ID)
	for i := range e.cols {
		var err error
		c := &e.cols[i]
		if e.plansOnly {
			buf, err = c.viaPlan(e.m, buf, r.Values[i])
		} else {
			buf, err = c.append(e.m, buf, r.Values[i])
		}
		if err != nil {
			return buf, fmt.Errorf("column %d: %w", i+1, err)
		}
	}
	buf = appendInt64(buf, r.Version)
	buf = appendText(buf, r.Pos.Topic)
	buf = appendInt32(buf, r.Pos.Partition)
	buf = appendInt64(buf, r.Pos.Offset)
	buf = appendUUID(buf, batchID)
	if e.unavailable {
		buf = appendInt4Array(buf, r.Unavailable)
	}
	return buf, nil
}

// columnEncoder encodes one column's values: the Go types internal/decode
// hands for the column's type by hand, anything else through pgx's plan
// for the value's Go type, kept until a value of another type comes.
type columnEncoder struct {
	oid  uint32
	typ  reflect.Type
	plan pgtype.EncodePlan
}

const (
	microsToY2K  = 946684800 * 1_000_000 // 2000-01-01, PostgreSQL's epoch, in Unix microseconds
	secondsToY2K = 946684800
)

func (c *columnEncoder) append(m *pgtype.Map, buf []byte, v any) ([]byte, error) {
	if v == nil {
		return appendNull(buf), nil
	}
	switch c.oid {
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID:
		if s, ok := v.(string); ok {
			return appendText(buf, s), nil
		}
	case pgtype.Int8OID:
		if n, ok := v.(int64); ok {
			return appendInt64(buf, n), nil
		}
	case pgtype.Int4OID:
		if n, ok := v.(int32); ok {
			return appendInt32(buf, n), nil
		}
	case pgtype.Int2OID:
		if n, ok := v.(int16); ok {
			return binary.BigEndian.AppendUint16(appendLen(buf, 2), uint16(n)), nil
		}
	case pgtype.NumericOID:
		if n, ok := v.(record.Numeric); ok {
			if out, ok := appendNumeric(buf, string(n)); ok {
				return out, nil
			}
		}
	case pgtype.Float8OID:
		if f, ok := v.(float64); ok {
			return binary.BigEndian.AppendUint64(appendLen(buf, 8), math.Float64bits(f)), nil
		}
	case pgtype.Float4OID:
		if f, ok := v.(float32); ok {
			return binary.BigEndian.AppendUint32(appendLen(buf, 4), math.Float32bits(f)), nil
		}
	case pgtype.BoolOID:
		if b, ok := v.(bool); ok {
			var x byte
			if b {
				x = 1
			}
			return append(appendLen(buf, 1), x), nil
		}
	case pgtype.TimestamptzOID:
		if t, ok := v.(time.Time); ok {
			return appendInt64(buf, t.Unix()*1_000_000+int64(t.Nanosecond()/1000)-microsToY2K), nil
		}
	case pgtype.TimestampOID:
		if t, ok := v.(time.Time); ok {
			// The wall clock, whatever the zone, as pgx does.
			if t.Location() != time.UTC {
				t = time.Date(t.Year(), t.Month(), t.Day(), t.Hour(), t.Minute(), t.Second(), t.Nanosecond(), time.UTC)
			}
			return appendInt64(buf, t.Unix()*1_000_000+int64(t.Nanosecond()/1000)-microsToY2K), nil
		}
	case pgtype.DateOID:
		if t, ok := v.(time.Time); ok {
			// The wall clock's day, whatever the zone, as pgx does.
			if t.Location() != time.UTC {
				t = time.Date(t.Year(), t.Month(), t.Day(), 0, 0, 0, 0, time.UTC)
			}
			s := t.Unix() - secondsToY2K
			days := s / 86400
			if s%86400 < 0 {
				days--
			}
			return appendInt32(buf, int32(days)), nil
		}
	case pgtype.TimeOID:
		if t, ok := v.(pgtype.Time); ok {
			if !t.Valid {
				return appendNull(buf), nil
			}
			return appendInt64(buf, t.Microseconds), nil
		}
	case pgtype.UUIDOID:
		switch u := v.(type) {
		case [16]byte:
			return appendUUID(buf, u), nil
		case record.ID:
			return appendUUID(buf, u), nil
		}
	case pgtype.JSONBOID:
		if j, ok := v.(json.RawMessage); ok {
			if j == nil {
				return appendNull(buf), nil
			}
			return append(append(appendLen(buf, len(j)+1), 1), j...), nil
		}
	case pgtype.ByteaOID:
		if b, ok := v.([]byte); ok {
			if b == nil {
				return appendNull(buf), nil
			}
			return append(appendLen(buf, len(b)), b...), nil
		}
	}
	return c.viaPlan(m, buf, v)
}

// viaPlan encodes v with pgx's codec for the column, as pgx.CopyFrom
// would, its plan looked up once per Go type.
func (c *columnEncoder) viaPlan(m *pgtype.Map, buf []byte, v any) ([]byte, error) {
	if v == nil {
		return appendNull(buf), nil
	}
	t := reflect.TypeOf(v)
	if t.Kind() == reflect.Pointer {
		// A nil pointer is NULL, and Map.Encode knows the rules
		// (driver.Valuer); pointers are no type decode hands.
		return appendVia(buf, func(b []byte) ([]byte, error) { return m.Encode(c.oid, pgtype.BinaryFormatCode, v, b) })
	}
	if t != c.typ {
		c.plan = m.PlanEncode(c.oid, pgtype.BinaryFormatCode, v)
		if c.plan == nil {
			c.typ = nil
			return buf, fmt.Errorf("unable to encode %#v into binary format for OID %d", v, c.oid)
		}
		c.typ = t
	}
	return appendVia(buf, func(b []byte) ([]byte, error) { return c.plan.Encode(v, b) })
}

// appendVia appends a field that enc encodes: a nil result is NULL.
func appendVia(buf []byte, enc func([]byte) ([]byte, error)) ([]byte, error) {
	at := len(buf)
	out, err := enc(appendNull(buf))
	if err != nil {
		return buf, err
	}
	if out == nil {
		return buf[:at+4], nil
	}
	binary.BigEndian.PutUint32(out[at:], uint32(len(out)-at-4))
	return out, nil
}

func appendNull(buf []byte) []byte { return binary.BigEndian.AppendUint32(buf, math.MaxUint32) }

func appendLen(buf []byte, n int) []byte { return binary.BigEndian.AppendUint32(buf, uint32(n)) }

func appendText(buf []byte, s string) []byte { return append(appendLen(buf, len(s)), s...) }

func appendInt64(buf []byte, n int64) []byte {
	return binary.BigEndian.AppendUint64(appendLen(buf, 8), uint64(n))
}

func appendInt32(buf []byte, n int32) []byte {
	return binary.BigEndian.AppendUint32(appendLen(buf, 4), uint32(n))
}

func appendUUID(buf []byte, u [16]byte) []byte { return append(appendLen(buf, 16), u[:]...) }

// appendInt4Array appends a one-dimensional integer[] without NULLs, as
// PostgreSQL's array_recv reads it; an empty or nil one is NULL, as
// unavailableArg has it.
func appendInt4Array(buf []byte, a []int32) []byte {
	if len(a) == 0 {
		return appendNull(buf)
	}
	buf = appendLen(buf, 20+8*len(a))
	buf = binary.BigEndian.AppendUint32(buf, 1) // dimensions
	buf = binary.BigEndian.AppendUint32(buf, 0) // no NULLs
	buf = binary.BigEndian.AppendUint32(buf, pgtype.Int4OID)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(a)))
	buf = binary.BigEndian.AppendUint32(buf, 1) // lower bound
	for _, n := range a {
		buf = appendInt32(buf, n)
	}
	return buf
}

// appendNumeric appends s, a decimal spelled -?[0-9]+(\.[0-9]+)? as
// record.Numeric is, in numeric's binary form: base-10000 digits from the
// most significant, the weight of the first (a power of 10000), the sign,
// and the display scale, the digits after the point s spells (so that
// 1.50 stays 1.50). ok is false for any other spelling.
func appendNumeric(buf []byte, s string) (_ []byte, ok bool) {
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		s = s[1:]
	}
	intPart, frac := s, ""
	for i := 0; i < len(s); i++ {
		if s[i] == '.' {
			intPart, frac = s[:i], s[i+1:]
			if frac == "" {
				return buf, false
			}
			break
		}
	}
	if intPart == "" || !allDigits(intPart) || !allDigits(frac) || len(frac) > math.MaxInt16 {
		return buf, false
	}
	for len(intPart) > 1 && intPart[0] == '0' {
		intPart = intPart[1:]
	}
	if intPart == "0" {
		intPart = ""
	}
	dscale := len(frac)
	for len(frac) > 0 && frac[len(frac)-1] == '0' {
		frac = frac[:len(frac)-1]
	}
	// Digits of four: the integer part's counted from the point leftwards,
	// the fraction's rightwards, the last padded with zeros.
	nInt := (len(intPart) + 3) / 4
	weight := nInt - 1
	if nInt == 0 {
		// Leading zero groups of the fraction are not stored.
		for len(frac) >= 4 && frac[:4] == "0000" {
			frac = frac[4:]
			weight--
		}
	}
	nFrac := (len(frac) + 3) / 4
	ndigits := nInt + nFrac
	if ndigits > math.MaxUint16 || weight > math.MaxInt16 || weight < math.MinInt16 {
		return buf, false
	}
	at := len(buf)
	buf = appendLen(buf, 0) // the length, set below
	var sign uint16
	if neg && ndigits > 0 {
		sign = 0x4000
	}
	if ndigits == 0 {
		weight = 0
	}
	buf = binary.BigEndian.AppendUint16(buf, uint16(ndigits))
	buf = binary.BigEndian.AppendUint16(buf, uint16(int16(weight)))
	buf = binary.BigEndian.AppendUint16(buf, sign)
	buf = binary.BigEndian.AppendUint16(buf, uint16(dscale))
	first := len(intPart) - (nInt-1)*4
	for i := 0; i < len(intPart); {
		n := 4
		if i == 0 {
			n = first
		}
		buf = binary.BigEndian.AppendUint16(buf, digits(intPart[i:i+n]))
		i += n
	}
	for i := 0; i < len(frac); i += 4 {
		g := frac[i:min(i+4, len(frac))]
		d := digits(g)
		for range 4 - len(g) {
			d *= 10
		}
		buf = binary.BigEndian.AppendUint16(buf, d)
	}
	binary.BigEndian.PutUint32(buf[at:], uint32(len(buf)-at-4))
	return buf, true
}

func allDigits(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// digits is the value of up to four decimal digits.
func digits(s string) uint16 {
	var n uint16
	for i := 0; i < len(s); i++ {
		n = n*10 + uint16(s[i]-'0')
	}
	return n
}

// columnOID is the OID of a configured column type, as the stage (and
// the target) declare it.
func columnOID(ct config.ColumnType) uint32 {
	switch ct.Base {
	case "text":
		return pgtype.TextOID
	case "varchar":
		return pgtype.VarcharOID
	case "char":
		return pgtype.BPCharOID
	case "bigint":
		return pgtype.Int8OID
	case "integer":
		return pgtype.Int4OID
	case "smallint":
		return pgtype.Int2OID
	case "numeric":
		return pgtype.NumericOID
	case "double precision":
		return pgtype.Float8OID
	case "real":
		return pgtype.Float4OID
	case "boolean":
		return pgtype.BoolOID
	case "date":
		return pgtype.DateOID
	case "timestamptz":
		return pgtype.TimestamptzOID
	case "timestamp":
		return pgtype.TimestampOID
	case "time":
		return pgtype.TimeOID
	case "uuid":
		return pgtype.UUIDOID
	case "jsonb":
		return pgtype.JSONBOID
	case "bytea":
		return pgtype.ByteaOID
	}
	// Validate refuses any other type; the server would refuse the COPY.
	return 0
}
