package decode

import (
	"bytes"
	"encoding/base64"
	"math"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// The plain path: most values of a JSON record are plain (a string without
// escapes, a number, true or false) and convert straight from their raw
// bytes, without boxing them into an any first (toAny) for convert to take
// apart again. It only ever succeeds: a value it does not take, or one
// that would fail, goes the way through toAny and convert, which words
// the error. FuzzPlain holds its results to convert's.

// plainValue is a raw JSON value taken apart: text holds a string's body
// (str) or a number's spelling (num).
type plainValue struct {
	text     []byte
	str, num bool
}

// plainOf takes apart the valid raw JSON value raw; ok is false for a
// string with escapes, an object, an array or null.
func plainOf(raw []byte) (plainValue, bool) {
	switch c := raw[0]; {
	case c == '"':
		body := raw[1 : len(raw)-1]
		if bytes.IndexByte(body, '\\') >= 0 {
			return plainValue{}, false
		}
		return plainValue{text: body, str: true}, true
	case c == '-' || c >= '0' && c <= '9':
		return plainValue{text: raw, num: true}, true
	case c == 't' || c == 'f':
		return plainValue{text: raw}, true
	}
	return plainValue{}, false
}

// plain is convert(ct, toAny(raw)) when that succeeds and raw is plain;
// ok is false otherwise.
func plain(ct config.ColumnType, raw []byte) (v any, ok bool) {
	p, ok := plainOf(raw)
	if !ok {
		return nil, false
	}
	switch ct.Base {
	case "text", "varchar", "char":
		if !p.str {
			return nil, false
		}
		s, err := fitText(ct, string(p.text))
		return s, err == nil
	case "bigint":
		return plainInt(p, math.MinInt64, math.MaxInt64)
	case "integer":
		n, ok := plainInt(p, math.MinInt32, math.MaxInt32)
		return int32(n), ok
	case "smallint":
		n, ok := plainInt(p, math.MinInt16, math.MaxInt16)
		return int16(n), ok
	case "numeric":
		if !p.str && !p.num {
			return nil, false
		}
		s := string(p.text)
		n, ok := plainDecimal(s)
		if !ok {
			return nil, false
		}
		if !ct.HasPrecision {
			n = withScaleOf(n, s)
		}
		return n, fitNumeric(ct, n) == nil
	case "real":
		if !p.num {
			return nil, false
		}
		f, err := strconv.ParseFloat(string(p.text), 32)
		return float32(f), err == nil
	case "double precision":
		if !p.num {
			return nil, false
		}
		f, err := strconv.ParseFloat(string(p.text), 64)
		return f, err == nil
	case "boolean":
		if p.str || p.num {
			return nil, false
		}
		return p.text[0] == 't', true
	case "date":
		if !p.str {
			return nil, false
		}
		d, err := record.ParseDate(string(p.text))
		return d.Time(), err == nil
	case "timestamptz":
		t, ok := plainTime(p)
		if !ok {
			return nil, false
		}
		t = t.UTC().Truncate(time.Microsecond)
		return t, fitTimestamp(ct, t) == nil
	case "timestamp":
		var t time.Time
		var err error
		switch {
		case p.str:
			t, err = wallClock(string(p.text))
		case p.num:
			var ok bool
			if t, ok = plainTime(p); !ok {
				return nil, false
			}
		default:
			return nil, false
		}
		if err != nil {
			return nil, false
		}
		t = t.Truncate(time.Microsecond)
		return t, fitTimestamp(ct, t) == nil
	case "time":
		if !p.str {
			return nil, false
		}
		us, err := parseTimeOfDay(string(p.text))
		if err != nil || fitTime(ct, us) != nil {
			return nil, false
		}
		return pgtype.Time{Microseconds: us, Valid: true}, true
	case "uuid":
		if !p.str {
			return nil, false
		}
		u, ok := uuidOf(p.text)
		return u, ok
	case "bytea":
		if !p.str {
			return nil, false
		}
		b := make([]byte, base64.StdEncoding.DecodedLen(len(p.text)))
		n, err := base64.StdEncoding.Decode(b, p.text)
		return b[:n], err == nil
	}
	return nil, false // jsonb, and anything else: convert's
}

// plainInt is toInt of a plain value when it is a decimal integer within
// [lo, hi], as strconv.ParseInt spells one.
func plainInt(p plainValue, lo, hi int64) (int64, bool) {
	if !p.str && !p.num {
		return 0, false
	}
	n, err := strconv.ParseInt(string(p.text), 10, 64)
	return n, err == nil && n >= lo && n <= hi
}

// plainTime is toTime of a plain value when it succeeds.
func plainTime(p plainValue) (time.Time, bool) {
	var t time.Time
	switch {
	case p.str:
		var err error
		if t, err = time.Parse(time.RFC3339Nano, string(p.text)); err != nil {
			return time.Time{}, false
		}
	case p.num:
		ms, err := strconv.ParseInt(string(p.text), 10, 64)
		if err != nil {
			return time.Time{}, false
		}
		t = time.UnixMilli(ms).UTC()
	default:
		return time.Time{}, false
	}
	return t, checkTimestamp(t) == nil
}

// plainTargetDate is d.targetDate(toAny(raw)) when that succeeds and raw
// is plain.
func (d *Decoder) plainTargetDate(raw []byte) (record.Date, bool) {
	if d.isDebezium {
		return record.Date{}, false
	}
	loc := d.loc
	if d.dateCol >= 0 {
		c := d.cols[d.dateCol]
		if c.semantic != "" {
			return record.Date{}, false
		}
		if c.typ == "timestamp" {
			loc = time.UTC
		}
	}
	p, ok := plainOf(raw)
	if !ok {
		return record.Date{}, false
	}
	if p.str && len(p.text) == len(time.DateOnly) {
		date, err := record.ParseDate(string(p.text))
		return date, err == nil
	}
	t, ok := plainTime(p)
	if !ok {
		return record.Date{}, false
	}
	return record.DateOf(t.In(loc)), true
}

// plainVersion is d.version's value when the version field is plain and
// reads.
func (d *Decoder) plainVersion(raw []byte) (int64, bool) {
	p, ok := plainOf(raw)
	if !ok {
		return 0, false
	}
	if d.verTS {
		t, ok := plainTime(p)
		return t.UnixMicro(), ok
	}
	return plainInt(p, math.MinInt64, math.MaxInt64)
}
