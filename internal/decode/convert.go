package decode

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"math/big"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// bad builds a BadRecord of class; see record.Bad.
func bad(class, format string, args ...any) error { return record.Bad(class, format, args...) }

// Decoder decodes the records of one pipeline. It is not safe for
// concurrent use: it keeps the record it scans.
type Decoder struct {
	p        *config.Pipeline
	loc      *time.Location
	cols     []column
	key      []int // indexes into cols
	keyTypes []string
	tops     map[string]int // first path segments the decoder reads, numbered
	names    []string       // tops by number
	// order is, by a member's place in the last record, the number of
	// its name in tops (-1: none): records of a topic mostly spell their
	// members in one order, and a comparison is cheaper than the map.
	order []int
	// obj is the one object scan fills, record after record: a Decoder
	// is used by one goroutine at a time.
	obj     object
	dateFld []string
	dateTop int // dateFld[0]'s number in tops
	// dateCol is the column the date field fills, -1 if none: its
	// semantic type reads the date field too, and a timestamp (without
	// time zone) names its day as it is, in no zone.
	dateCol int
	verFld  []string
	verTop  int
	verTS   bool
	f       *formats
	// isDebezium: the pipeline reads Debezium events; unavailable is the
	// connector's placeholder for an unchanged TOAST value, as text and
	// as bytea sends it (base64 of its bytes).
	isDebezium           bool
	unavailable, unavB64 string
}

type column struct {
	name     string
	typ      string // the base type: text for varchar(n), numeric for numeric(p,s)
	ct       config.ColumnType
	path     []string
	top      int // path[0]'s number in tops
	nullable bool
	semantic string // the column's semantic_type
}

// NewDecoder returns a decoder for a validated pipeline.
func NewDecoder(p *config.Pipeline) *Decoder {
	d := &Decoder{p: p, loc: p.Location(), dateFld: strings.Split(p.Date.Field, "."), dateCol: -1, f: newFormats(p)}
	if p.Format == "debezium" {
		d.isDebezium = true
		if p.Debezium != nil && p.Debezium.UnavailableValue != "" {
			d.unavailable = p.Debezium.UnavailableValue
			d.unavB64 = base64.StdEncoding.EncodeToString([]byte(d.unavailable))
		}
	}
	for i, c := range p.Columns {
		ct := c.Typ()
		d.cols = append(d.cols, column{name: c.Name, typ: ct.Base, ct: ct, path: strings.Split(c.Field, "."), nullable: c.Nullable,
			semantic: c.SemanticType})
		if c.Field == p.Date.Field && d.dateCol < 0 {
			d.dateCol = i
		}
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
	add := func(path []string) int {
		if _, ok := d.tops[path[0]]; !ok {
			d.tops[path[0]] = len(d.tops)
			d.names = append(d.names, path[0])
		}
		return d.tops[path[0]]
	}
	for i := range d.cols {
		d.cols[i].top = add(d.cols[i].path)
	}
	d.dateTop = add(d.dateFld)
	if p.Version != nil {
		d.verTop = add(strings.Split(p.Version.Field, "."))
	}
	d.obj = object{d: d, raws: make([][]byte, len(d.tops))}
	d.order = make([]int, 64)
	for i := range d.order {
		d.order[i] = -1
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
	o, _ := obj.(*object) // a JSON row: plain values skip toAny
	// at is the instant the date field holds when a timestamptz column
	// has read it already, plainly: its day in the zone is the target date.
	var at time.Time
	for i, c := range d.cols {
		if o != nil && c.semantic == "" && !d.isDebezium {
			if raw := o.raw(c.top, c.path); raw != nil {
				if v, ok := plain(c.ct, raw); ok {
					r.Values[i] = v
					if i == d.dateCol && c.typ == "timestamptz" {
						at = v.(time.Time)
					}
					continue
				}
			}
		}
		raw, ok := obj.lookup(c.path)
		if !ok || raw == nil {
			if !c.nullable {
				return record.Row{}, record.Date{}, bad(record.ClassMissing, "field %q (column %s): missing or null", strings.Join(c.path, "."), c.name)
			}
			continue
		}
		if d.isUnavailable(c, raw) {
			if slices.Contains(d.key, i) {
				return record.Row{}, record.Date{}, bad(record.ClassEvent, "field %q (key column %s): Debezium sent the unavailable-value placeholder for a key column", strings.Join(c.path, "."), c.name)
			}
			// Left NULL and marked: the stored value stays (see sink).
			r.Unavailable = append(r.Unavailable, int32(i))
			continue
		}
		v, err := d.convertField(c, raw)
		if err != nil {
			return record.Row{}, record.Date{}, bad(classOf(err), "field %q (column %s %s): %v", strings.Join(c.path, "."), c.name, c.ct, err)
		}
		r.Values[i] = v
	}
	date, ok := record.Date{}, false
	switch {
	case !at.IsZero():
		date, ok = record.DateOf(at.In(d.loc)), true
	case o != nil:
		if raw := o.raw(d.dateTop, d.dateFld); raw != nil {
			date, ok = d.plainTargetDate(raw)
		}
	}
	if !ok {
		raw, ok := obj.lookup(d.dateFld)
		if !ok || raw == nil {
			return record.Row{}, record.Date{}, bad(record.ClassMissing, "date field %q: missing or null", d.p.Date.Field)
		}
		if date, err = d.targetDate(raw); err != nil {
			return record.Row{}, record.Date{}, bad(classOf(err), "date field %q: %v", d.p.Date.Field, err)
		}
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
	if o, ok := obj.(*object); ok {
		if raw := o.raw(d.verTop, d.verFld); raw != nil {
			if v, ok := d.plainVersion(raw); ok {
				return v, nil
			}
		}
	}
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

// targetDate reads the date field: with the semantic type of the column it
// fills, and a timestamp (without time zone) names its day in no zone.
func (d *Decoder) targetDate(raw any) (record.Date, error) {
	loc := d.loc
	if d.dateCol >= 0 {
		c := d.cols[d.dateCol]
		var err error
		if raw, err = d.semantic(c, raw); err != nil {
			return record.Date{}, err
		}
		if c.typ == "timestamp" {
			loc = time.UTC // the wall clock, kept as UTC
		}
	}
	if _, ok := raw.(json.Number); ok && d.isDebezium {
		return record.Date{}, wrongType("%s without the schema envelope has no unit: give the column the date field fills a semantic_type", describe(raw))
	}
	return targetDate(raw, loc)
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
		if j, ok := raw.(jsonText); ok {
			raw = string(j) // a json source column into text: its text
		}
		s, err := toString(raw, "a string")
		if err != nil {
			return nil, err
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
		if !ct.HasPrecision {
			n = withScale(n, raw)
		}
		return n, fitNumeric(ct, n)
	case "real":
		// The float4 nearest the decimal, as PostgreSQL's own input
		// would read it.
		f, err := toFloat(raw, 32, "real")
		return float32(f), err
	case "bytea":
		s, err := toString(raw, "a base64 string")
		if err != nil {
			return nil, err
		}
		b, err := base64.StdEncoding.DecodeString(s)
		if err != nil {
			return nil, wrongType("%s is not base64", quoteValue(s))
		}
		return b, nil
	case "time":
		s, err := toString(raw, "a time string (HH:MM:SS[.ffffff]); a number needs the column's semantic_type")
		if err != nil {
			return nil, err
		}
		us, err := parseTimeOfDay(s)
		if err != nil {
			return nil, err
		}
		return pgtype.Time{Microseconds: us, Valid: true}, fitTime(ct, us)
	case "timestamp":
		t, err := toWallClock(raw)
		if err != nil {
			return nil, err
		}
		t = t.Truncate(time.Microsecond)
		return t, fitTimestamp(ct, t)
	case "double precision":
		return toFloat(raw, 64, "double precision")
	case "boolean":
		b, ok := raw.(bool)
		if !ok {
			return nil, wrongType("%s is not a boolean", describe(raw))
		}
		return b, nil
	case "date":
		s, err := toString(raw, "a date string")
		if err != nil {
			return nil, err
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
		s, err := toString(raw, "a UUID string")
		if err != nil {
			return nil, err
		}
		u, err := parseUUID(s)
		if err != nil {
			return nil, err
		}
		return u, nil
	case "jsonb":
		if j, ok := raw.(jsonText); ok {
			v, err := parseJSONText(string(j))
			if err != nil {
				return nil, err
			}
			raw = v
		}
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

// toString is raw as a string, or a wrong-type error saying it is not what.
func toString(raw any, what string) (string, error) {
	s, ok := raw.(string)
	if !ok {
		return "", wrongType("%s is not %s", describe(raw), what)
	}
	return s, nil
}

// toFloat is raw, a JSON number, as the nearest float of bits (32 or 64);
// typ names the column type in the out-of-range error.
func toFloat(raw any, bits int, typ string) (float64, error) {
	n, ok := raw.(json.Number)
	if !ok {
		return 0, wrongType("%s is not a number", describe(raw))
	}
	f, err := strconv.ParseFloat(string(n), bits)
	if err != nil {
		return 0, outOfRange("%s is out of range for %s", quoteValue(string(n)), typ)
	}
	return f, nil
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

// withScale gives the canonical n as many fractional digits as raw's plain
// spelling has (up to numeric's 1000), as PostgreSQL's input keeps them for
// an unconstrained numeric: Debezium's 2804689398636178206627.0 stays .0.
// A spelling with an exponent keeps the canonical form.
func withScale(n record.Numeric, raw any) record.Numeric {
	var s string
	switch v := raw.(type) {
	case json.Number:
		s = string(v)
	case string:
		s = v
	}
	return withScaleOf(n, s)
}

// withScaleOf is withScale of the spelling s.
func withScaleOf(n record.Numeric, s string) record.Numeric {
	point := strings.IndexByte(s, '.')
	if point < 0 || strings.IndexByte(s, 'e') >= 0 || strings.IndexByte(s, 'E') >= 0 {
		return n
	}
	want := len(s) - point - 1
	have := 0
	if i := strings.IndexByte(string(n), '.'); i >= 0 {
		have = len(n) - i - 1
	}
	if want <= have || want > config.MaxNumericScale {
		return n
	}
	out := string(n)
	if have == 0 {
		out += "."
	}
	return record.Numeric(out + strings.Repeat("0", want-have))
}

func parseUUID(s string) ([16]byte, error) {
	u, ok := uuidOf(s)
	if !ok {
		return u, wrongType("%s is not a UUID", quoteValue(s))
	}
	return u, nil
}

// uuidOf reads a UUID spelled as 32 hex digits, with four dashes among
// them or none.
func uuidOf[T string | []byte](s T) ([16]byte, bool) {
	var u [16]byte
	if len(s) != 32 && len(s) != 36 {
		return u, false
	}
	n := 0 // hex digits read
	for i := range len(s) {
		if s[i] == '-' {
			continue
		}
		c, ok := hexDigit(s[i])
		if !ok || n == 32 {
			return u, false
		}
		u[n/2] |= c << (4 * (1 - n%2))
		n++
	}
	return u, n == 32
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

// isUnavailable reports whether raw is Debezium's unavailable-value
// placeholder: an unchanged TOAST value the connector could not read. Text
// and json send the placeholder itself, bytea the base64 of its bytes.
func (d *Decoder) isUnavailable(c column, raw any) bool {
	if d.unavailable == "" {
		return false
	}
	switch v := raw.(type) {
	case string:
		return v == d.unavailable || c.typ == "bytea" && v == d.unavB64
	case jsonText:
		return string(v) == d.unavailable
	}
	return false
}

// convertField converts a field's value for its column, first reading it
// as its semantic type says.
func (d *Decoder) convertField(c column, raw any) (any, error) {
	raw, err := d.semantic(c, raw)
	if err != nil {
		return nil, err
	}
	return convert(c.ct, raw)
}

// semantic reads a value by the column's semantic_type. Without one, a
// Debezium event without the schema envelope cannot say what a number in
// a date or time column counts, or whether a string for a jsonb column is
// JSON: it is refused, never guessed.
func (d *Decoder) semantic(c column, raw any) (any, error) {
	if c.semantic == "" {
		if !d.isDebezium {
			return raw, nil
		}
		_, num := raw.(json.Number)
		_, str := raw.(string)
		switch {
		case num && (c.typ == "date" || c.typ == "time" || c.typ == "timestamp" || c.typ == "timestamptz"):
			return nil, wrongType("%s without the schema envelope has no unit: set the column's semantic_type (README: Debezium types)", describe(raw))
		case str && c.typ == "jsonb":
			return nil, wrongType("a string without the schema envelope may or may not hold JSON: set the column's semantic_type (io.debezium.data.Json)")
		}
		return raw, nil
	}
	switch c.semantic {
	case "io.debezium.data.Json":
		if s, ok := raw.(string); ok {
			return jsonText(s), nil
		}
		return raw, nil
	case "org.apache.kafka.connect.data.Decimal":
		j, err := connectDecimal(raw, map[string]any{"scale": strconv.Itoa(c.ct.Scale)})
		if err != nil {
			return nil, wrongType("%v", err)
		}
		return j, nil
	case "io.debezium.data.VariableScaleDecimal":
		if m, ok := raw.(map[string]any); ok {
			j, err := variableScaleDecimal(m["scale"], m["value"])
			if err != nil {
				return nil, wrongType("%v", err)
			}
			return j, nil
		}
		return raw, nil
	}
	j, ok, err := connectJSON(c.semantic, raw)
	switch {
	case err != nil:
		return nil, wrongType("%v", err)
	case ok:
		return j, nil
	}
	return raw, nil
}

// jsonText is a string that holds JSON (a json or jsonb source column):
// a jsonb column stores the value it spells, a text column its text.
type jsonText string

// parseJSONText parses one JSON value, numbers kept exact.
func parseJSONText(s string) (any, error) {
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, wrongType("%s is not JSON", quoteValue(s))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, wrongType("%s is not one JSON value", quoteValue(s))
	}
	return v, nil
}

// parseTimeOfDay reads HH:MM:SS[.f...] (00:00:00 to 24:00:00, PostgreSQL's
// range) as microseconds since midnight. Digits below a microsecond are
// dropped, as for timestamps.
func parseTimeOfDay(s string) (int64, error) {
	bad := func() (int64, error) {
		return 0, wrongType("%s is not a time of day (HH:MM:SS[.ffffff], no zone)", quoteValue(s))
	}
	if len(s) < 8 || s[2] != ':' || s[5] != ':' {
		return bad()
	}
	num := func(t string) (int64, bool) {
		n, err := strconv.ParseUint(t, 10, 8)
		return int64(n), err == nil && len(t) == 2
	}
	h, ok1 := num(s[0:2])
	m, ok2 := num(s[3:5])
	sec, ok3 := num(s[6:8])
	if !ok1 || !ok2 || !ok3 || m > 59 || sec > 59 {
		return bad()
	}
	var us int64
	if frac := s[8:]; frac != "" {
		if frac[0] != '.' || len(frac) < 2 || len(frac) > 10 {
			return bad()
		}
		for i, r := range frac[1:] {
			if r < '0' || r > '9' {
				return bad()
			}
			if i < 6 {
				us = us*10 + int64(r-'0')
			}
		}
		for i := len(frac) - 1; i < 6; i++ {
			us *= 10
		}
	}
	total := ((h*60+m)*60+sec)*1_000_000 + us
	if total > 86_400_000_000 {
		return 0, outOfRange("%s is after 24:00:00", quoteValue(s))
	}
	return total, nil
}

// formatTimeOfDay spells microseconds since midnight as parseTimeOfDay
// reads them.
func formatTimeOfDay(us int64) string {
	sec := us / 1_000_000
	return fmt.Sprintf("%02d:%02d:%02d.%06d", sec/3600, sec/60%60, sec%60, us%1_000_000)
}

// toWallClock reads a timestamp without time zone: an ISO 8601 date and
// time without an offset, or with Z (the spelling of Debezium's Timestamp
// types, a wall clock counted as if in UTC), or epoch milliseconds as for
// timestamptz. Another offset is refused: the column could not keep it.
func toWallClock(raw any) (time.Time, error) {
	s, ok := raw.(string)
	if !ok {
		return toTime(raw)
	}
	return wallClock(s)
}

// wallClock is toWallClock of a string.
func wallClock(s string) (time.Time, error) {
	for _, layout := range []string{"2006-01-02T15:04:05.999999999", "2006-01-02 15:04:05.999999999"} {
		if t, err := time.Parse(layout, s); err == nil {
			return t, checkTimestamp(t)
		}
	}
	t, err := time.Parse(time.RFC3339Nano, strings.Replace(s, " ", "T", 1))
	if err != nil {
		return time.Time{}, wrongType("%s is not a timestamp (YYYY-MM-DDTHH:MM:SS[.ffffff], no offset or Z)", quoteValue(s))
	}
	if _, off := t.Zone(); off != 0 {
		return time.Time{}, wrongType("%s has a UTC offset, which a timestamp (without time zone) column cannot keep: send it without one or in UTC, or use timestamptz", quoteValue(s))
	}
	return t.UTC(), checkTimestamp(t)
}
