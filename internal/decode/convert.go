package decode

import (
	"encoding/json"
	"math"
	"math/big"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// bad builds a BadRecord of class; see record.Bad.
func bad(class, format string, args ...any) error { return record.Bad(class, format, args...) }

// Decoder decodes the records of one pipeline.
type Decoder struct {
	p        *config.Pipeline
	loc      *time.Location
	cols     []column
	key      []int // indexes into cols
	keyTypes []string
	tops     map[string]int // first path segments the decoder reads, numbered
	dateFld  []string
	verFld   []string
	verTS    bool
	f        *formats
}

type column struct {
	name     string
	typ      string // the base type: text for varchar(n), numeric for numeric(p,s)
	ct       config.ColumnType
	path     []string
	nullable bool
}

// NewDecoder returns a decoder for a validated pipeline.
func NewDecoder(p *config.Pipeline) *Decoder {
	d := &Decoder{p: p, loc: p.Location(), dateFld: strings.Split(p.Date.Field, "."), f: newFormats(p)}
	for _, c := range p.Columns {
		ct := c.Typ()
		d.cols = append(d.cols, column{name: c.Name, typ: ct.Base, ct: ct, path: strings.Split(c.Field, "."), nullable: c.Nullable})
	}
	for _, k := range p.Key {
		for i, c := range d.cols {
			if c.name == k {
				d.key = append(d.key, i)
				d.keyTypes = append(d.keyTypes, c.typ)
			}
		}
	}
	// The scanner keeps only the top-level members these paths start at.
	d.tops = map[string]int{}
	add := func(path []string) {
		if _, ok := d.tops[path[0]]; !ok {
			d.tops[path[0]] = len(d.tops)
		}
	}
	for _, c := range d.cols {
		add(c.path)
	}
	add(d.dateFld)
	if p.Version != nil {
		add(strings.Split(p.Version.Field, "."))
	}
	if p.Version != nil {
		d.verFld = strings.Split(p.Version.Field, ".")
		d.verTS = p.Version.Type == "timestamptz"
	}
	return d
}

// Pipeline returns the decoder's pipeline.
func (d *Decoder) Pipeline() *config.Pipeline { return d.p }

// decodeRow turns a row, its fields as JSON would decode them whatever the
// record's format (see Decode in format.go), into a row and its target
// date. A *BadRecord error means the record is bad input and must be
// dead-lettered.
func (d *Decoder) decodeRow(key, value []byte, obj fields, pos record.Position) (record.Row, record.Date, error) {
	var err error
	r := record.Row{Values: make([]any, len(d.cols)), Pos: pos, Size: len(key) + len(value), Key: key, Value: value}
	for i, c := range d.cols {
		raw, ok := obj.lookup(c.path)
		if !ok || raw == nil {
			if !c.nullable {
				return record.Row{}, record.Date{}, bad(record.ClassMissing, "field %q (column %s): missing or null", strings.Join(c.path, "."), c.name)
			}
			continue
		}
		v, err := convert(c.ct, raw)
		if err != nil {
			return record.Row{}, record.Date{}, bad(classOf(err), "field %q (column %s %s): %v", strings.Join(c.path, "."), c.name, c.ct, err)
		}
		r.Values[i] = v
	}
	raw, ok := obj.lookup(d.dateFld)
	if !ok || raw == nil {
		return record.Row{}, record.Date{}, bad(record.ClassMissing, "date field %q: missing or null", d.p.Date.Field)
	}
	date, err := targetDate(raw, d.loc)
	if err != nil {
		return record.Row{}, record.Date{}, bad(classOf(err), "date field %q: %v", d.p.Date.Field, err)
	}
	if d.verFld != nil {
		if r.Version, err = d.version(obj); err != nil {
			return record.Row{}, record.Date{}, err
		}
	}
	var kv [8]any
	keyVals := kv[:0]
	for _, k := range d.key {
		keyVals = append(keyVals, r.Values[k])
	}
	r.ID = record.RecordID(d.keyTypes, keyVals)
	return r, date, nil
}

// version reads the version field.
func (d *Decoder) version(obj fields) (int64, error) {
	raw, ok := obj.lookup(d.verFld)
	if !ok || raw == nil {
		return 0, bad(record.ClassMissing, "version field %q: missing or null", d.p.Version.Field)
	}
	if d.verTS {
		t, err := toTime(raw)
		if err != nil {
			return 0, bad(classOf(err), "version field %q: %v", d.p.Version.Field, err)
		}
		return t.UnixMicro(), nil
	}
	v, err := toInt(raw, math.MinInt64, math.MaxInt64)
	if err != nil {
		return 0, bad(classOf(err), "version field %q: %v", d.p.Version.Field, err)
	}
	return v, nil
}

// targetDate is the calendar date of a timestamp in loc; a bare date is
// taken as it is, since it names a day, not an instant.
func targetDate(raw any, loc *time.Location) (record.Date, error) {
	if s, ok := raw.(string); ok && len(s) == len(time.DateOnly) {
		d, err := record.ParseDate(s)
		if err != nil {
			if strings.HasSuffix(err.Error(), "out of range") {
				_, what, _ := strings.Cut(err.Error(), ": ")
				return record.Date{}, wrongType("%s is not a date: %s", quoteValue(s), what)
			}
			return record.Date{}, wrongType("%s is not a date (YYYY-MM-DD) or an RFC 3339 timestamp", quoteValue(s))
		}
		return d, nil
	}
	t, err := toTime(raw)
	if err != nil {
		return record.Date{}, err
	}
	return record.DateOf(t.In(loc)), nil
}

// toTime accepts an RFC 3339 string or epoch milliseconds.
func toTime(raw any) (time.Time, error) {
	switch v := raw.(type) {
	case string:
		t, err := time.Parse(time.RFC3339Nano, v)
		if err != nil {
			return time.Time{}, wrongType("%s is not an RFC 3339 timestamp", quoteValue(v))
		}
		return t, checkTimestamp(t)
	case json.Number:
		ms, err := v.Int64()
		if err != nil {
			return time.Time{}, wrongType("%s is not integer epoch milliseconds", quoteValue(string(v)))
		}
		t := time.UnixMilli(ms).UTC()
		return t, checkTimestamp(t)
	}
	return time.Time{}, wrongType("%s is not a timestamp", describe(raw))
}

func describe(raw any) string {
	switch raw.(type) {
	case map[string]any:
		return "an object"
	case []any:
		return "an array"
	case bool:
		return "a boolean"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	}
	return "null"
}

// toInt accepts a JSON number with no fractional part (1 and 1.0 are the
// same integer) or a string holding one, as producers often send 64-bit
// integers as strings; the value, not its spelling, is what counts.
func toInt(raw any, lo, hi int64) (int64, error) {
	var s string
	switch v := raw.(type) {
	case json.Number:
		s = string(v)
	case string:
		s = v
	default:
		return 0, wrongType("%s is not an integer", describe(raw))
	}
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		if n < lo || n > hi {
			return 0, outOfRange("%d is out of range (%d to %d)", n, lo, hi)
		}
		return n, nil
	}
	r, ok := parseDecimal(s)
	switch {
	case !ok || !r.IsInt():
		return 0, wrongType("%s is not an integer", quoteValue(s))
	case !r.Num().IsInt64():
		return 0, outOfRange("%s is out of range (%d to %d)", quoteValue(s), lo, hi)
	}
	n := r.Num().Int64()
	if n < lo || n > hi {
		return 0, outOfRange("%d is out of range (%d to %d)", n, lo, hi)
	}
	return n, nil
}

// decimalRE is the decimal syntax big.Rat is given. Without it, SetString
// also takes fractions, hex and binary, and, worse, any exponent:
// "1e-1000000" is ten bytes of input and seconds of CPU. Three exponent
// digits match the 1000 fractional digits toNumeric allows.
var decimalRE = regexp.MustCompile(`^[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?$`)

func parseDecimal(s string) (*big.Rat, bool) {
	if !decimalRE.MatchString(s) {
		return nil, false
	}
	return new(big.Rat).SetString(s)
}

// convert turns a decoded JSON value into the Go value pgx encodes for the
// column type, checking it against the type's modifiers.
func convert(ct config.ColumnType, raw any) (any, error) {
	switch ct.Base {
	case "text", "varchar", "char":
		s, ok := raw.(string)
		if !ok {
			return nil, wrongType("%s is not a string", describe(raw))
		}
		return fitText(ct, s)
	case "bigint":
		return toInt(raw, math.MinInt64, math.MaxInt64)
	case "integer":
		n, err := toInt(raw, math.MinInt32, math.MaxInt32)
		return int32(n), err
	case "smallint":
		n, err := toInt(raw, math.MinInt16, math.MaxInt16)
		return int16(n), err
	case "numeric":
		n, err := toNumeric(raw)
		if err != nil {
			return nil, err
		}
		return n, fitNumeric(ct, n)
	case "double precision":
		n, ok := raw.(json.Number)
		if !ok {
			return nil, wrongType("%s is not a number", describe(raw))
		}
		f, err := n.Float64()
		if err != nil {
			return nil, outOfRange("%s is out of range for double precision", quoteValue(string(n)))
		}
		return f, nil
	case "boolean":
		b, ok := raw.(bool)
		if !ok {
			return nil, wrongType("%s is not a boolean", describe(raw))
		}
		return b, nil
	case "date":
		s, ok := raw.(string)
		if !ok {
			return nil, wrongType("%s is not a date string", describe(raw))
		}
		d, err := record.ParseDate(s)
		if err != nil {
			return nil, wrongType("%s is not YYYY-MM-DD", quoteValue(s))
		}
		return d.Time(), nil
	case "timestamptz":
		t, err := toTime(raw)
		if err != nil {
			return nil, err
		}
		// PostgreSQL keeps microseconds; truncating here makes the staged
		// value equal the stored one, so change detection compares like
		// with like.
		t = t.UTC().Truncate(time.Microsecond)
		return t, fitTimestamp(ct, t)
	case "uuid":
		s, ok := raw.(string)
		if !ok {
			return nil, wrongType("%s is not a UUID string", describe(raw))
		}
		u, err := parseUUID(s)
		if err != nil {
			return nil, err
		}
		return u, nil
	case "jsonb":
		if anyString(raw, hasNUL) {
			return nil, badText("a string holds a NUL character (\\u0000), which jsonb cannot store")
		}
		b, err := json.Marshal(raw)
		if err != nil {
			return nil, wrongType("cannot be encoded as JSON")
		}
		return json.RawMessage(b), nil
	}
	return nil, wrongType("unsupported type %s", ct)
}

// anyString reports whether f holds for a string anywhere in the decoded
// JSON value v, member names included.
func anyString(v any, f func(string) bool) bool {
	switch x := v.(type) {
	case string:
		return f(x)
	case []any:
		for _, e := range x {
			if anyString(e, f) {
				return true
			}
		}
	case map[string]any:
		for k, e := range x {
			if f(k) || anyString(e, f) {
				return true
			}
		}
	}
	return false
}

func hasNUL(s string) bool { return strings.IndexByte(s, 0) >= 0 }

func toNumeric(raw any) (record.Numeric, error) {
	var s string
	switch v := raw.(type) {
	case json.Number:
		s = string(v)
	case string:
		s = v
	default:
		return "", wrongType("%s is not a number", describe(raw))
	}
	if n, ok := plainDecimal(s); ok {
		return n, nil
	}
	r, ok := parseDecimal(s)
	if !ok {
		return "", wrongType("%s is not a decimal number", quoteValue(s))
	}
	// A decimal's denominator has only the prime factors 2 and 5; find the
	// exact number of fractional digits.
	den := new(big.Int).Set(r.Denom())
	digits := 0
	ten, two, five := big.NewInt(10), big.NewInt(2), big.NewInt(5)
	for den.Cmp(big.NewInt(1)) != 0 {
		switch {
		case new(big.Int).Mod(den, ten).Sign() == 0:
			den.Div(den, ten)
		case new(big.Int).Mod(den, two).Sign() == 0:
			den.Div(den, two)
		case new(big.Int).Mod(den, five).Sign() == 0:
			den.Div(den, five)
		default:
			return "", wrongType("%s is not a finite decimal", quoteValue(s))
		}
		digits++
		if digits > 1000 {
			return "", outOfRange("%s has more than 1000 digits after the point", quoteValue(s))
		}
	}
	out := r.FloatString(digits)
	if strings.Contains(out, ".") {
		out = strings.TrimRight(strings.TrimRight(out, "0"), ".")
	}
	if out == "-0" {
		out = "0"
	}
	return record.Numeric(out), nil
}

func parseUUID(s string) ([16]byte, error) {
	var u [16]byte
	h := strings.ReplaceAll(s, "-", "")
	if len(h) != 32 || (len(s) != 32 && len(s) != 36) {
		return u, wrongType("%s is not a UUID", quoteValue(s))
	}
	for i := range 16 {
		b, err := strconv.ParseUint(h[2*i:2*i+2], 16, 8)
		if err != nil {
			return u, wrongType("%s is not a UUID", quoteValue(s))
		}
		u[i] = byte(b)
	}
	return u, nil
}

// plainDecimal canonicalizes the common spelling -?[0-9]+(.[0-9]+)? without
// big.Rat: leading zeros of the integer part and trailing zeros of the
// fraction go, and so does a bare point; -0 is 0. Anything else (exponents,
// a plus sign, a bare point) reports false and takes the exact path.
func plainDecimal(s string) (record.Numeric, bool) {
	i := 0
	neg := len(s) > 0 && s[0] == '-'
	if neg {
		i++
	}
	intStart := i
	for i < len(s) && s[i] >= '0' && s[i] <= '9' {
		i++
	}
	intEnd := i
	if intEnd == intStart || intEnd-intStart > 1000 {
		return "", false
	}
	fracEnd := i
	if i < len(s) {
		if s[i] != '.' {
			return "", false
		}
		i++
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		if i == intEnd+1 || i != len(s) || i-intEnd-1 > 1000 {
			return "", false
		}
		fracEnd = i
		for fracEnd > intEnd+1 && s[fracEnd-1] == '0' {
			fracEnd--
		}
		if fracEnd == intEnd+1 {
			fracEnd = intEnd // no fraction left: drop the point
		}
	}
	for intStart < intEnd-1 && s[intStart] == '0' {
		intStart++
	}
	if intEnd-intStart == 1 && s[intStart] == '0' && fracEnd == intEnd {
		return "0", true // zero, whatever its sign
	}
	if intStart == 0 && fracEnd == len(s) || neg && intStart == 1 && fracEnd == len(s) {
		return record.Numeric(s), true // already canonical
	}
	if neg {
		return record.Numeric("-" + s[intStart:fracEnd]), true
	}
	return record.Numeric(s[intStart:fracEnd]), true
}
