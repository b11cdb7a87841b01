package decode

import (
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// typeCase is one source column as the Debezium PostgreSQL connector sends
// it (default time.precision.mode adaptive, decimal.handling.mode precise,
// binary.handling.mode bytes): its Connect schema, its JSON value, the
// configured column and the value to be staged.
type typeCase struct {
	col      string
	typ      string // the configured column type
	schema   string // the Connect field schema, without "field"
	semantic string // the column's semantic_type without the envelope
	value    string // the JSON value in the event
	want     any
}

var debeziumTypes = []typeCase{
	{"d", "date", `"type":"int32","name":"io.debezium.time.Date"`, "io.debezium.time.Date", `19063`,
		time.Date(2022, 3, 12, 0, 0, 0, 0, time.UTC)},
	{"ts", "timestamp(6)", `"type":"int64","name":"io.debezium.time.MicroTimestamp"`, "io.debezium.time.MicroTimestamp", `1647056689380642`,
		time.Date(2022, 3, 12, 3, 44, 49, 380642000, time.UTC)},
	{"tsm", "timestamp(3)", `"type":"int64","name":"io.debezium.time.Timestamp"`, "io.debezium.time.Timestamp", `1647056689380`,
		time.Date(2022, 3, 12, 3, 44, 49, 380000000, time.UTC)},
	{"tsn", "timestamp", `"type":"int64","name":"io.debezium.time.NanoTimestamp"`, "io.debezium.time.NanoTimestamp", `1647056689380642000`,
		time.Date(2022, 3, 12, 3, 44, 49, 380642000, time.UTC)},
	{"tsc", "timestamptz", `"type":"int64","name":"org.apache.kafka.connect.data.Timestamp"`, "org.apache.kafka.connect.data.Timestamp", `1647056689380`,
		time.Date(2022, 3, 12, 3, 44, 49, 380000000, time.UTC)},
	{"tz", "timestamptz", `"type":"string","name":"io.debezium.time.ZonedTimestamp"`, "", `"2022-03-12T03:44:49.380642+05:30"`,
		time.Date(2022, 3, 11, 22, 14, 49, 380642000, time.UTC)},
	{"t", "time", `"type":"int64","name":"io.debezium.time.MicroTime"`, "io.debezium.time.MicroTime", `13489380642`,
		pgtype.Time{Microseconds: 13489380642, Valid: true}},
	{"tm", "time(3)", `"type":"int32","name":"io.debezium.time.Time"`, "io.debezium.time.Time", `13489380`,
		pgtype.Time{Microseconds: 13489380000, Valid: true}},
	{"tn", "time", `"type":"int64","name":"io.debezium.time.NanoTime"`, "io.debezium.time.NanoTime", `86400000000000`,
		pgtype.Time{Microseconds: 86400000000, Valid: true}},
	{"j", "jsonb", `"type":"string","name":"io.debezium.data.Json"`, "io.debezium.data.Json", `"{\"a\": 1, \"b\": [1.50, \"x\"]}"`,
		json.RawMessage(`{"a":1,"b":[1.50,"x"]}`)},
	{"js", "text", `"type":"string","name":"io.debezium.data.Json"`, "", `"{\"a\": 1}"`, `{"a": 1}`},
	{"b", "bytea", `"type":"bytes"`, "", `"AAEC/w=="`, []byte{0, 1, 2, 255}},
	{"r", "real", `"type":"float"`, "", `1.1`, float32(1.1)},
	{"f", "double precision", `"type":"double"`, "", `1.1`, 1.1},
	{"u", "uuid", `"type":"string","name":"io.debezium.data.Uuid"`, "", `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`,
		[16]byte{0xa0, 0xee, 0xbc, 0x99, 0x9c, 0x0b, 0x4e, 0xf8, 0xbb, 0x6d, 0x6b, 0xb9, 0xbd, 0x38, 0x0a, 0x11}},
	{"x", "text", `"type":"string","name":"io.debezium.data.Xml"`, "", `"<a/>"`, "<a/>"},
	{"n", "numeric", `"type":"struct","name":"io.debezium.data.VariableScaleDecimal","fields":[{"type":"int32","field":"scale"},{"type":"bytes","field":"value"}]`,
		"io.debezium.data.VariableScaleDecimal", `{"scale":3,"value":"+zQ="}`, record.Numeric("-1.228")},
	// An unconstrained numeric keeps the source's scale, trailing zeros
	// included, as the source column holds it.
	{"nz", "numeric", `"type":"struct","name":"io.debezium.data.VariableScaleDecimal","fields":[{"type":"int32","field":"scale"},{"type":"bytes","field":"value"}]`,
		"io.debezium.data.VariableScaleDecimal", `{"scale":1,"value":"BfBs1+nIdYhcXg=="}`, record.Numeric("2804689398636178206627.0")},
	{"nzn", "numeric", `"type":"struct","name":"io.debezium.data.VariableScaleDecimal","fields":[{"type":"int32","field":"scale"},{"type":"bytes","field":"value"}]`,
		"io.debezium.data.VariableScaleDecimal", `{"scale":3,"value":"z8w="}`, record.Numeric("-12.340")},
	{"ns", "numeric(10,2)", `"type":"bytes","name":"org.apache.kafka.connect.data.Decimal","parameters":{"scale":"2"}`,
		"org.apache.kafka.connect.data.Decimal", `"BNI="`, record.Numeric("12.34")},
	{"i", "integer", `"type":"int32"`, "", `-7`, int32(-7)},
	{"bo", "boolean", `"type":"boolean"`, "", `true`, true},
}

// debeziumTypeEvent is a create event for the type cases, with or without
// the schema envelope.
func debeziumTypeEvent(cases []typeCase, envelope bool) []byte {
	fields := []string{`{"type":"int64","field":"id"}`}
	vals := []string{`"id":1`}
	for _, c := range cases {
		fields = append(fields, fmt.Sprintf(`{%s,"optional":true,"field":%q}`, c.schema, c.col))
		vals = append(vals, fmt.Sprintf("%q:%s", c.col, c.value))
	}
	payload := `{"before":null,"after":{` + strings.Join(vals, ",") + `},"source":{"connector":"postgresql","lsn":42},"op":"c"}`
	if !envelope {
		return []byte(payload)
	}
	row := `{"type":"struct","fields":[` + strings.Join(fields, ",") + `],"optional":true,"field":"%s"}`
	return []byte(`{"schema":{"type":"struct","fields":[` + fmt.Sprintf(row, "before") + "," + fmt.Sprintf(row, "after") +
		`,{"type":"struct","fields":[{"type":"int64","field":"lsn"}],"field":"source"},{"type":"string","field":"op"}]},"payload":` + payload + `}`)
}

func debeziumTypesPipeline(cases []typeCase, semantic bool) config.Pipeline {
	p := customers("lsn", "json", "apply")
	p.Columns = []config.Column{col("id", "bigint")}
	for _, c := range cases {
		cc := nullable(c.col, c.typ)
		if semantic {
			cc.SemanticType = c.semantic
		}
		p.Columns = append(p.Columns, cc)
	}
	p.Date.Field = "ts"
	return p
}

// Every type the PostgreSQL connector sends, read exactly with the schema
// envelope and, without it, from the column type plus its semantic_type:
// the same staged values both ways.
func TestDebeziumTypes(t *testing.T) {
	for _, envelope := range []bool{true, false} {
		t.Run(fmt.Sprintf("envelope=%v", envelope), func(t *testing.T) {
			d := NewDecoder(pipeline(t, debeziumTypesPipeline(debeziumTypes, !envelope)))
			row, date := decodeOK(t, d, []byte(`{"id":1}`), debeziumTypeEvent(debeziumTypes, envelope))
			for i, c := range debeziumTypes {
				got := row.Values[i+1]
				if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", c.want) {
					t.Errorf("%s %s: %#v, want %#v", c.col, c.typ, got, c.want)
				}
			}
			if date.String() != "2022-03-12" || row.Version != 42 {
				t.Errorf("date %s, version %d", date, row.Version)
			}
		})
	}
}

// Without the envelope and without a semantic_type, a number in a date or
// time column has no unit and a string for jsonb may or may not be JSON:
// refused, never guessed (the issue: microseconds read as milliseconds).
func TestDebeziumNoUnitRefused(t *testing.T) {
	for _, c := range debeziumTypes {
		if c.semantic == "" || strings.Contains(c.semantic, "Decimal") {
			continue
		}
		cs := []typeCase{c}
		p := debeziumTypesPipeline(cs, false)
		p.Date.Field = "id" // a number too; the date field is checked below
		d := NewDecoder(pipeline(t, p))
		_, _, err := d.Decode(nil, debeziumTypeEvent(cs, false), record.Position{})
		got := badReason(t, err)
		if !strings.HasPrefix(got, "wrong-type: field \""+c.col+"\"") || !strings.Contains(got, "semantic_type") {
			t.Errorf("%s %s: %q, want a wrong-type naming semantic_type", c.col, c.typ, got)
		}
	}
	// The date field itself, a number with no column to say its unit.
	p := debeziumTypesPipeline(nil, false)
	p.Date.Field = "when"
	d := NewDecoder(pipeline(t, p))
	_, _, err := d.Decode(nil, []byte(`{"after":{"id":1,"when":1647056689380642},"source":{"lsn":1},"op":"c"}`), record.Position{})
	if got := badReason(t, err); !strings.Contains(got, `date field "when": a number without the schema envelope has no unit`) {
		t.Errorf("date field: %q", got)
	}
}

// A timestamp (without time zone) date field names its day as it is, in
// no zone: 23:30 on the 12th is the 12th in Asia/Kolkata too.
func TestDebeziumWallClockDate(t *testing.T) {
	cs := []typeCase{debeziumTypes[1]}
	cs[0].value = `1647127800000000` // 2022-03-12 23:30:00
	p := debeziumTypesPipeline(cs, true)
	p.Date.TimeZone = "Asia/Kolkata"
	d := NewDecoder(pipeline(t, p))
	_, date := decodeOK(t, d, nil, debeziumTypeEvent(cs, false))
	if date.String() != "2022-03-12" {
		t.Errorf("date %s, want 2022-03-12", date)
	}
}

// An unchanged TOAST value arrives as the placeholder: text as itself,
// json as itself, bytea as the base64 of its bytes. The column is marked
// unavailable and left NULL; the rest of the row is read. In a key column
// it is bad input.
func TestDebeziumUnavailable(t *testing.T) {
	cs := []typeCase{
		{"body", "text", `"type":"string"`, "", `"__debezium_unavailable_value"`, nil},
		{"j", "jsonb", `"type":"string","name":"io.debezium.data.Json"`, "io.debezium.data.Json", `"__debezium_unavailable_value"`, nil},
		{"b", "bytea", `"type":"bytes"`, "", `"X19kZWJleml1bV91bmF2YWlsYWJsZV92YWx1ZQ=="`, nil},
		{"ts", "timestamp", `"type":"int64","name":"io.debezium.time.MicroTimestamp"`, "io.debezium.time.MicroTimestamp", `1647056689380642`,
			time.Date(2022, 3, 12, 3, 44, 49, 380642000, time.UTC)},
		{"name", "text", `"type":"string"`, "", `"kept"`, "kept"},
	}
	for _, envelope := range []bool{true, false} {
		d := NewDecoder(pipeline(t, debeziumTypesPipeline(cs, !envelope)))
		row, _ := decodeOK(t, d, nil, debeziumTypeEvent(cs, envelope))
		if !slices.Equal(row.Unavailable, []int32{1, 2, 3}) {
			t.Errorf("envelope %v: unavailable %v, want [1 2 3]", envelope, row.Unavailable)
		}
		for i, c := range cs {
			if fmt.Sprintf("%#v", row.Values[i+1]) != fmt.Sprintf("%#v", c.want) {
				t.Errorf("envelope %v: %s = %#v, want %#v", envelope, c.col, row.Values[i+1], c.want)
			}
		}
	}
	p := debeziumTypesPipeline(cs, true)
	p.Columns[0].Type = "text"
	d := NewDecoder(pipeline(t, p))
	_, _, err := d.Decode(nil, []byte(`{"after":{"id":"__debezium_unavailable_value","ts":1},"source":{"lsn":1},"op":"u"}`), record.Position{})
	if got := badReason(t, err); got != `debezium-event: field "id" (key column id): Debezium sent the unavailable-value placeholder for a key column` {
		t.Errorf("key: %q", got)
	}
	// A plain JSON pipeline has no placeholder: the string is a value.
	p = debeziumTypesPipeline(cs[:1], false)
	p.Format, p.Debezium, p.Date.Field = "json", nil, "when"
	d = NewDecoder(pipeline(t, p))
	row, _ := decodeOK(t, d, nil, []byte(`{"id":1,"when":"2022-03-12","body":"__debezium_unavailable_value"}`))
	if row.Unavailable != nil || row.Values[1] != "__debezium_unavailable_value" {
		t.Errorf("plain JSON: %+v", row)
	}
}

// Two events of one key in a batch: the newer one, which could not carry
// an unchanged TOAST value, takes it from the older one.
func TestUnavailableFilledInBatch(t *testing.T) {
	older := record.Row{Values: []any{int64(1), "big", "a"}, Version: 1}
	newer := record.Row{Values: []any{int64(1), nil, "b"}, Version: 2, Unavailable: []int32{1}}
	newer.Fill(&older)
	if newer.Values[1] != "big" || newer.Unavailable != nil && len(newer.Unavailable) != 0 {
		t.Errorf("filled %+v", newer)
	}
	both := record.Row{Values: []any{int64(1), nil, "c"}, Version: 3, Unavailable: []int32{1}}
	both.Fill(&record.Row{Values: []any{int64(1), nil, "x"}, Unavailable: []int32{1}})
	if !slices.Equal(both.Unavailable, []int32{1}) {
		t.Errorf("still unavailable: %+v", both)
	}
}

// The new column types' strict checks, for a plain JSON record.
func TestConvertNewTypes(t *testing.T) {
	for _, tc := range []struct {
		typ, value, want string // want: the value as %v, or the error
	}{
		{"timestamp", `"2022-03-12T03:44:49.380642"`, "2022-03-12 03:44:49.380642 +0000 UTC"},
		{"timestamp", `"2022-03-12 03:44:49"`, "2022-03-12 03:44:49 +0000 UTC"},
		{"timestamp", `"2022-03-12T03:44:49Z"`, "2022-03-12 03:44:49 +0000 UTC"},
		{"timestamp", `"2022-03-12T03:44:49+01:00"`, `"2022-03-12T03:44:49+01:00" has a UTC offset, which a timestamp (without time zone) column cannot keep: send it without one or in UTC, or use timestamptz`},
		{"timestamp(0)", `"2022-03-12T03:44:49.5"`, "2022-03-12T03:44:49.5Z has more fractional digits than timestamp(0) keeps; PostgreSQL would round it"},
		{"time", `"24:00:00"`, "{86400000000 true}"},
		{"time", `"23:59:59.9999999"`, "{86399999999 true}"},
		{"time", `"24:00:01"`, `"24:00:01" is after 24:00:00`},
		{"time", `"12:00:00Z"`, `"12:00:00Z" is not a time of day (HH:MM:SS[.ffffff], no zone)`},
		{"time", `43200`, `a number is not a time string (HH:MM:SS[.ffffff]); a number needs the column's semantic_type`},
		{"time(2)", `"12:00:00.123"`, "12:00:00.123000 has more fractional digits than time(2) keeps; PostgreSQL would round it"},
		{"real", `3.4e39`, `"3.4e39" is out of range for real`},
		{"real", `0.1`, "0.1"},
		{"bytea", `"not base64!"`, `"not base64!" is not base64`},
		{"bytea", `""`, "[]"},
	} {
		ct, err := config.ParseType(tc.typ)
		if err != nil {
			t.Fatal(err)
		}
		v, err := convert(ct, toAny([]byte(tc.value)))
		got := fmt.Sprint(v)
		if err != nil {
			got = err.Error()
		}
		if got != tc.want {
			t.Errorf("%s %s: %s, want %s", tc.typ, tc.value, got, tc.want)
		}
	}
}
