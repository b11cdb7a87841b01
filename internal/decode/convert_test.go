package decode

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// wide is a pipeline with a column of every type; only id is required.
func wide(t testing.TB) *config.Pipeline {
	return pipeline(t, config.Pipeline{
		Key: []string{"id"},
		Columns: []config.Column{
			col("id", "bigint"),
			nullable("name", "text"),
			nullable("small", "smallint"),
			nullable("int", "integer"),
			nullable("amount", "numeric"),
			nullable("ratio", "double precision"),
			nullable("flag", "boolean"),
			nullable("day", "date"),
			nullable("at", "timestamptz"),
			nullable("ref", "uuid"),
			{Name: "city", Type: "text", Field: "address.city", Nullable: true},
			nullable("payload", "jsonb"),
		},
		Date: config.Date{Field: "ts"},
	})
}

func TestDecodeValues(t *testing.T) {
	d := NewDecoder(wide(t))
	value := []byte(`{
		"id": "42", "name": "Zoë\t\"quoted\"", "small": -32768, "int": 2147483647,
		"amount": 1.50, "ratio": 0.25, "flag": false, "day": "2026-02-28",
		"at": "2026-03-29T03:30:00.1234567+02:00",
		"ref": "6BA7B810-9DAD-11D1-80B4-00C04FD430C8",
		"address": {"city": "Köln", "zip": "50667"},
		"payload": {"b": [1, 2.50, null], "a": {"x": "y"}},
		"ts": "2026-03-29T01:30:00Z", "ignored": [1, 2, 3]
	}`)
	key := []byte("k-42")
	pos := record.Position{TP: record.TP{Topic: "orders", Partition: 3}, Offset: 17}
	r, date, err := d.Decode(key, value, pos)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	want := []any{
		int64(42),
		"Zoë\t\"quoted\"",
		int16(-32768),
		int32(math.MaxInt32),
		record.Numeric("1.50"), // an unconstrained numeric keeps the scale it is given
		0.25,
		false,
		time.Date(2026, 2, 28, 0, 0, 0, 0, time.UTC),
		time.Date(2026, 3, 29, 1, 30, 0, 123456000, time.UTC),
		[16]byte{0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8},
		"Köln",
		json.RawMessage(`{"a":{"x":"y"},"b":[1,2.50,null]}`),
	}
	for i, c := range d.Pipeline().Columns {
		if !reflect.DeepEqual(r.Values[i], want[i]) {
			t.Errorf("column %s = %#v (%T), want %#v (%T)", c.Name, r.Values[i], r.Values[i], want[i], want[i])
		}
	}
	if len(r.Values) != len(want) {
		t.Errorf("%d values, want %d", len(r.Values), len(want))
	}
	if date != (record.Date{Year: 2026, Month: time.March, Day: 29}) {
		t.Errorf("date = %s, want 2026-03-29", date)
	}
	if r.Pos != pos || r.Size != len(key)+len(value) || string(r.Key) != string(key) || string(r.Value) != string(value) {
		t.Errorf("row position/size/raw = %+v/%d/%q/%q, want %+v/%d and the raw key and value", r.Pos, r.Size, r.Key, r.Value, pos, len(key)+len(value))
	}
	if r.Version != 0 {
		t.Errorf("version = %d without a version field, want 0", r.Version)
	}
	if want := keyID(t, []string{"bigint"}, `[42]`); r.ID != want {
		t.Errorf("id = %s, want %s", r.ID, want)
	}
}

func TestDecodeNulls(t *testing.T) {
	d := NewDecoder(wide(t))
	for _, value := range []string{
		`{"id":1,"ts":"2026-01-01"}`,
		`{"id":1,"ts":"2026-01-01","name":null,"small":null,"int":null,"amount":null,"ratio":null,"flag":null,"day":null,"at":null,"ref":null,"address":null,"payload":null}`,
		`{"id":1,"ts":"2026-01-01","address":{"city":null}}`,
		`{"id":1,"ts":"2026-01-01","address":"not an object"}`,
		`{"id":1,"ts":"2026-01-01","address":{}}`,
		" \n{\"id\":1,\"ts\":\"2026-01-01\"}\r\n\t ", // whitespace around the object is not trailing data
	} {
		r, _, err := d.Decode(nil, []byte(value), record.Position{})
		if err != nil {
			t.Fatalf("Decode %s: %v", value, err)
		}
		for i, v := range r.Values[1:] {
			if v != nil {
				t.Errorf("Decode %s: column %s = %#v, want nil (SQL NULL)", value, d.Pipeline().Columns[i+1].Name, v)
			}
		}
	}
}

func TestDecodeConversions(t *testing.T) {
	d := NewDecoder(wide(t))
	for _, tc := range []struct {
		column, json string
		want         any
	}{
		{"small", `32767`, int16(32767)},
		{"small", `"-32768"`, int16(-32768)},
		{"small", `7.0`, int16(7)},
		{"int", `-2147483648`, int32(math.MinInt32)},
		{"int", `2.1e3`, int32(2100)},
		// An unconstrained numeric keeps the scale it is given, as
		// PostgreSQL's input does; an exponent spelling is canonical.
		{"amount", `"-0.0"`, record.Numeric("0.0")},
		{"amount", `"-0.00"`, record.Numeric("0.00")},
		{"amount", `1.50`, record.Numeric("1.50")},
		{"amount", `"2804689398636178206627.0"`, record.Numeric("2804689398636178206627.0")},
		{"amount", `"-100.000"`, record.Numeric("-100.000")},
		{"amount", `1.50e1`, record.Numeric("15")},
		{"amount", `12e-4`, record.Numeric("0.0012")},
		{"amount", `1E+3`, record.Numeric("1000")},
		{"amount", `"007.10"`, record.Numeric("7.10")},
		{"amount", `99999999999999999999999999.99999999999999999999`, record.Numeric("99999999999999999999999999.99999999999999999999")},
		{"amount", `".5"`, record.Numeric("0.5")},
		{"amount", `".50"`, record.Numeric("0.50")},
		{"amount", `"5."`, record.Numeric("5")},
		{"amount", `"+1.5"`, record.Numeric("1.5")},
		{"amount", `1.5e-999`, record.Numeric("0." + strings.Repeat("0", 998) + "15")},
		{"amount", `1e999`, record.Numeric("1" + strings.Repeat("0", 999))},
		{"int", `"+7"`, int32(7)},
		{"int", `"-0"`, int32(0)},
		{"ratio", `1e308`, 1e308},
		{"ratio", `-0.5`, -0.5},
		{"ratio", `3`, 3.0},
		{"flag", `true`, true},
		{"name", `""`, ""},
		{"name", `"\u00e9"`, "é"},
		{"at", `1774747800123`, time.Date(2026, 3, 29, 1, 30, 0, 123000000, time.UTC)},
		{"at", `"2026-03-28T21:30:00-04:00"`, time.Date(2026, 3, 29, 1, 30, 0, 0, time.UTC)},
		{"ref", `"6ba7b8109dad11d180b400c04fd430c8"`, [16]byte{0x6b, 0xa7, 0xb8, 0x10, 0x9d, 0xad, 0x11, 0xd1, 0x80, 0xb4, 0x00, 0xc0, 0x4f, 0xd4, 0x30, 0xc8}},
		{"payload", `[1, "two", {"three": 3}]`, json.RawMessage(`[1,"two",{"three":3}]`)},
		{"payload", `"just a string"`, json.RawMessage(`"just a string"`)},
		{"payload", `12.50`, json.RawMessage(`12.50`)},
		{"payload", `false`, json.RawMessage(`false`)},
		{"payload", `"<&>"`, json.RawMessage(`"\u003c\u0026\u003e"`)},
	} {
		t.Run(tc.column+"="+tc.json, func(t *testing.T) {
			r, _, err := d.Decode(nil, []byte(`{"id":1,"ts":"2026-01-01",`+quote(tc.column)+`:`+tc.json+`}`), record.Position{})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			got := r.Values[columnIndex(t, d, tc.column)]
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("%s = %#v (%T), want %#v (%T)", tc.column, got, got, tc.want, tc.want)
			}
		})
	}
}

func quote(s string) string { b, _ := json.Marshal(s); return string(b) }

func columnIndex(t testing.TB, d *Decoder, name string) int {
	t.Helper()
	for i, c := range d.Pipeline().Columns {
		if c.Name == name {
			return i
		}
	}
	t.Fatalf("no column %s", name)
	return -1
}

func TestDecodeBadRecords(t *testing.T) {
	d := NewDecoder(wide(t))
	const ok = `"id":1,"ts":"2026-01-01"`
	for _, tc := range []struct {
		name  string
		value string
		want  string // the whole reason, or its start when it ends in "…"
	}{
		{"empty", ``, `malformed-json: the value is empty (0 bytes); expected a JSON object`},
		{"not JSON", `id=1`, `malformed-json: invalid character 'i' looking for beginning of value at byte 0`},
		{"truncated", `{"id":1,`, `malformed-json: the JSON ends unfinished after byte 8`},
		{"JSON array", `[{"id":1}]`, `not-an-object: expected a JSON object, got an array`},
		{"JSON string", `"x"`, `not-an-object: expected a JSON object, got a string`},
		{"JSON number", `1`, `not-an-object: expected a JSON object, got a number`},
		{"JSON null", `null`, `not-an-object: expected a JSON object, got null`},
		{"trailing garbage", `{` + ok + `} x`, `malformed-json: trailing data at byte 27 after the JSON value`},
		{"second object", `{` + ok + `}{` + ok + `}`, `malformed-json: trailing data at byte 26 after the JSON value`},
		{"trailing brace", `{` + ok + `}}`, `malformed-json: trailing data at byte 26 after the JSON value`},
		{"trailing bracket", `{` + ok + `}]`, `malformed-json: trailing data at byte 26 after the JSON value`},
		{"trailing comma", `{` + ok + `},`, `malformed-json: trailing data at byte 26 after the JSON value`},
		{"trailing colon", `{` + ok + `}:`, `malformed-json: trailing data at byte 26 after the JSON value`},
		{"invalid JSON after object", `{` + ok + `} {"a":`, `malformed-json: trailing data at byte 27 after the JSON value`},
		{"missing key field", `{"ts":"2026-01-01"}`, `missing-field: field "id" (column id): missing or null`},
		{"null key field", `{"id":null,"ts":"2026-01-01"}`, `missing-field: field "id" (column id): missing or null`},
		{"text is a number", `{` + ok + `,"name":1}`, `wrong-type: field "name" (column name text): a number is not a string`},
		{"text is an object", `{` + ok + `,"name":{}}`, `wrong-type: field "name" (column name text): an object is not a string`},
		{"text with NUL", `{` + ok + `,"name":"a\u0000b"}`, `invalid-text: field "name" (column name text): text contains a NUL character at character 1, which PostgreSQL cannot store`},
		{"bigint is a boolean", `{"id":true,"ts":"2026-01-01"}`, `wrong-type: field "id" (column id bigint): a boolean is not an integer`},
		{"bigint 1.5", `{"id":1.5,"ts":"2026-01-01"}`, `wrong-type: field "id" (column id bigint): "1.5" is not an integer`},
		{"bigint string 1.5", `{"id":"1.5","ts":"2026-01-01"}`, `wrong-type: field "id" (column id bigint): "1.5" is not an integer`},
		{"bigint above max", `{"id":9223372036854775808,"ts":"2026-01-01"}`, `out-of-range: field "id" (column id bigint): "9223372036854775808" is out of range (-9223372036854775808 to 9223372036854775807)`},
		{"bigint 1e19", `{"id":1e19,"ts":"2026-01-01"}`, `out-of-range: field "id" (column id bigint): "1e19" is out of range (-9223372036854775808 to 9223372036854775807)`},
		{"bigint empty string", `{"id":"","ts":"2026-01-01"}`, `wrong-type: field "id" (column id bigint): "" is not an integer`},
		{"bigint words", `{"id":"one","ts":"2026-01-01"}`, `wrong-type: field "id" (column id bigint): "one" is not an integer`},
		{"smallint above max", `{` + ok + `,"small":32768}`, `out-of-range: field "small" (column small smallint): 32768 is out of range (-32768 to 32767)`},
		{"smallint below min", `{` + ok + `,"small":-32769}`, `out-of-range: field "small" (column small smallint): -32769 is out of range (-32768 to 32767)`},
		{"smallint 4e4", `{` + ok + `,"small":4e4}`, `out-of-range: field "small" (column small smallint): 40000 is out of range (-32768 to 32767)`},
		{"integer above max", `{` + ok + `,"int":2147483648}`, `out-of-range: field "int" (column int integer): 2147483648 is out of range (-2147483648 to 2147483647)`},
		{"integer below min", `{` + ok + `,"int":"-2147483649"}`, `out-of-range: field "int" (column int integer): -2147483649 is out of range (-2147483648 to 2147483647)`},
		{"numeric is a boolean", `{` + ok + `,"amount":true}`, `wrong-type: field "amount" (column amount numeric): a boolean is not a number`},
		{"numeric words", `{` + ok + `,"amount":"1.5 EUR"}`, `wrong-type: field "amount" (column amount numeric): "1.5 EUR" is not a decimal number`},
		{"numeric fraction", `{` + ok + `,"amount":"1/3"}`, `wrong-type: field "amount" (column amount numeric): "1/3" is not a decimal number`},
		{"numeric NaN", `{` + ok + `,"amount":"NaN"}`, `wrong-type: field "amount" (column amount numeric): "NaN" is not a decimal number`},
		{"numeric too many digits", `{` + ok + `,"amount":1.25e-999}`, `out-of-range: field "amount" (column amount numeric): "1.25e-999" has more than 1000 digits after the point`},
		{"numeric huge exponent", `{` + ok + `,"amount":1e-1000000}`, `wrong-type: field "amount" (column amount numeric): "1e-1000000" is not a decimal number`},
		{"numeric four-digit exponent", `{` + ok + `,"amount":1e1000}`, `wrong-type: field "amount" (column amount numeric): "1e1000" is not a decimal number`},
		{"numeric hex", `{` + ok + `,"amount":"0x10"}`, `wrong-type: field "amount" (column amount numeric): "0x10" is not a decimal number`},
		{"numeric hex float", `{` + ok + `,"amount":"0x1p1000000"}`, `wrong-type: field "amount" (column amount numeric): "0x1p1000000" is not a decimal number`},
		{"numeric underscores", `{` + ok + `,"amount":"1_000"}`, `wrong-type: field "amount" (column amount numeric): "1_000" is not a decimal number`},
		{"numeric spaces", `{` + ok + `,"amount":" 1.5"}`, `wrong-type: field "amount" (column amount numeric): " 1.5" is not a decimal number`},
		{"numeric empty", `{` + ok + `,"amount":""}`, `wrong-type: field "amount" (column amount numeric): "" is not a decimal number`},
		{"bigint huge exponent", `{"id":1e1000000,"ts":"2026-01-01"}`, `wrong-type: field "id" (column id bigint): "1e1000000" is not an integer`},
		{"bigint hex", `{"id":"0x10","ts":"2026-01-01"}`, `wrong-type: field "id" (column id bigint): "0x10" is not an integer`},
		{"bigint fraction", `{"id":"4/2","ts":"2026-01-01"}`, `wrong-type: field "id" (column id bigint): "4/2" is not an integer`},
		{"bigint underscores", `{"id":"1_000","ts":"2026-01-01"}`, `wrong-type: field "id" (column id bigint): "1_000" is not an integer`},
		{"double is a string", `{` + ok + `,"ratio":"0.5"}`, `wrong-type: field "ratio" (column ratio double precision): a string is not a number`},
		{"double overflow", `{` + ok + `,"ratio":1e400}`, `out-of-range: field "ratio" (column ratio double precision): "1e400" is out of range for double precision`},
		{"boolean is a string", `{` + ok + `,"flag":"true"}`, `wrong-type: field "flag" (column flag boolean): a string is not a boolean`},
		{"boolean is a number", `{` + ok + `,"flag":1}`, `wrong-type: field "flag" (column flag boolean): a number is not a boolean`},
		{"date is a number", `{` + ok + `,"day":20260101}`, `wrong-type: field "day" (column day date): a number is not a date string`},
		{"date is a timestamp", `{` + ok + `,"day":"2026-01-01T00:00:00Z"}`, `wrong-type: field "day" (column day date): "2026-01-01T00:00:00Z" is not YYYY-MM-DD`},
		{"date out of range", `{` + ok + `,"day":"2026-02-29"}`, `wrong-type: field "day" (column day date): "2026-02-29" is not YYYY-MM-DD`},
		{"timestamptz without zone", `{` + ok + `,"at":"2026-01-01T00:00:00"}`, `wrong-type: field "at" (column at timestamptz): "2026-01-01T00:00:00" is not an RFC 3339 timestamp`},
		{"timestamptz is a boolean", `{` + ok + `,"at":false}`, `wrong-type: field "at" (column at timestamptz): a boolean is not a timestamp`},
		{"timestamptz fractional millis", `{` + ok + `,"at":1.5}`, `wrong-type: field "at" (column at timestamptz): "1.5" is not integer epoch milliseconds`},
		{"uuid too short", `{` + ok + `,"ref":"6ba7b810-9dad-11d1-80b4"}`, `wrong-type: field "ref" (column ref uuid): "6ba7b810-9dad-11d1-80b4" is not a UUID`},
		{"uuid not hex", `{` + ok + `,"ref":"zba7b810-9dad-11d1-80b4-00c04fd430c8"}`, `wrong-type: field "ref" (column ref uuid): "zba7b810-9dad-11d1-80b4-00c04fd430c8" is not a UUID`},
		{"uuid braces", `{` + ok + `,"ref":"{6ba7b810-9dad-11d1-80b4-00c04fd430c8}"}`, `wrong-type: field "ref" (column ref uuid): "{6ba7b810-9dad-11d1-80b4-00c04fd430c8}" is not a UUID`},
		{"uuid sign", `{` + ok + `,"ref":"+ba7b810-9dad-11d1-80b4-00c04fd430c8"}`, `wrong-type: field "ref" (column ref uuid): "+ba7b810-9dad-11d1-80b4-00c04fd430c8" is not a UUID`},
		{"uuid is a number", `{` + ok + `,"ref":1}`, `wrong-type: field "ref" (column ref uuid): a number is not a UUID string`},
		{"nested field through a scalar", `{` + ok + `,"address":{"city":{"name":"x"}}}`, `wrong-type: field "address.city" (column city text): an object is not a string`},
		{"tombstone", "\x00nil", "tombstone: the value is null; deletes are dead-lettered (pipeline deletes: dead_letter)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			value := []byte(tc.value)
			if tc.value == "\x00nil" {
				value = nil
			}
			r, _, err := d.Decode([]byte("key"), value, record.Position{TP: record.TP{Topic: "orders", Partition: 0}, Offset: 9})
			if err == nil {
				t.Fatalf("Decode succeeded with %+v, want a bad record", r.Values)
			}
			if got := badReason(t, err); got != tc.want {
				t.Errorf("reason:\n got  %s\n want %s", got, tc.want)
			}
			if r.Values != nil || r.ID != (record.ID{}) {
				t.Errorf("a bad record returned a row: %+v", r)
			}
		})
	}
}

func TestDecodeEmptyValueIsNotATombstone(t *testing.T) {
	d := NewDecoder(wide(t))
	_, _, err := d.Decode(nil, []byte{}, record.Position{})
	if got := badReason(t, err); strings.Contains(got, "tombstone") {
		t.Errorf("an empty value is reported as a tombstone: %s", got)
	}
}

func TestDecodeVersion(t *testing.T) {
	for _, tc := range []struct {
		typ, value string
		want       int64
		err        string
	}{
		{typ: "bigint", value: `3`, want: 3},
		{typ: "bigint", value: `"3"`, want: 3},
		{typ: "bigint", value: `3.0`, want: 3},
		{typ: "bigint", value: `-9223372036854775808`, want: math.MinInt64},
		{typ: "bigint", value: `9223372036854775807`, want: math.MaxInt64},
		{typ: "timestamptz", value: `"2026-03-29T03:30:00.000001+02:00"`, want: 1774747800000001},
		{typ: "timestamptz", value: `1774747800000`, want: 1774747800000000},
		{typ: "bigint", value: `null`, err: `missing-field: version field "meta.rev": missing or null`},
		{typ: "bigint", value: `3.5`, err: `wrong-type: version field "meta.rev": "3.5" is not an integer`},
		{typ: "bigint", value: `"v3"`, err: `wrong-type: version field "meta.rev": "v3" is not an integer`},
		{typ: "bigint", value: `true`, err: `wrong-type: version field "meta.rev": a boolean is not an integer`},
		{typ: "timestamptz", value: `"yesterday"`, err: `wrong-type: version field "meta.rev": "yesterday" is not an RFC 3339 timestamp`},
	} {
		t.Run(tc.typ+" "+tc.value, func(t *testing.T) {
			d := NewDecoder(pipeline(t, config.Pipeline{
				Key:     []string{"id"},
				Columns: []config.Column{col("id", "bigint")},
				Date:    config.Date{Field: "ts"},
				Version: &config.Version{Field: "meta.rev", Type: tc.typ},
			}))
			r, _, err := d.Decode(nil, []byte(`{"id":1,"ts":"2026-01-01","meta":{"rev":`+tc.value+`}}`), record.Position{})
			if tc.err != "" {
				if got := badReason(t, err); got != tc.err {
					t.Errorf("reason %q, want %q", got, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if r.Version != tc.want {
				t.Errorf("version = %d, want %d", r.Version, tc.want)
			}
		})
	}
	d := NewDecoder(pipeline(t, config.Pipeline{
		Key: []string{"id"}, Columns: []config.Column{col("id", "bigint")},
		Date: config.Date{Field: "ts"}, Version: &config.Version{Field: "rev"},
	}))
	_, _, err := d.Decode(nil, []byte(`{"id":1,"ts":"2026-01-01"}`), record.Position{})
	if got, want := badReason(t, err), `missing-field: version field "rev": missing or null`; got != want {
		t.Errorf("missing version: reason %q, want %q", got, want)
	}
}

func TestBadRecordError(t *testing.T) {
	err := bad(record.ClassType, "field %q: %d \xff\x00", "x", 1)
	var br *record.BadRecord
	if !errors.As(err, &br) || err.Error() != "wrong-type: field \"x\": 1 \ufffd\\x00" || br.Reason != err.Error() || br.Class != record.ClassType {
		t.Errorf("bad() = %#v", err)
	}
}

func TestNumericValue(t *testing.T) {
	for _, tc := range []struct {
		in   record.Numeric
		int  string
		exp  int32
		fail bool
	}{
		{in: "0", int: "0"},
		{in: "1.5", int: "15", exp: -1},
		{in: "-12.34", int: "-1234", exp: -2},
		{in: "100", int: "100"},
		{in: "0.001", int: "1", exp: -3},
		{in: "1.2.3", fail: true},
		{in: "", fail: true},
	} {
		n, err := tc.in.NumericValue()
		if tc.fail {
			if err == nil {
				t.Errorf("NumericValue(%q) = %+v, want an error", tc.in, n)
			}
			continue
		}
		if err != nil || !n.Valid || n.Int.String() != tc.int || n.Exp != tc.exp {
			t.Errorf("NumericValue(%q) = %v×10^%d (valid %v), %v; want %s×10^%d", tc.in, n.Int, n.Exp, n.Valid, err, tc.int, tc.exp)
		}
	}
}
