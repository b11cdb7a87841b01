package decode

import (
	"strings"
	"testing"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// typed is a pipeline with a text key and columns that carry modifiers.
func typed(t testing.TB) *config.Pipeline {
	return pipeline(t, config.Pipeline{
		Name: "typed",
		Key:  []string{"sku"},
		Columns: []config.Column{
			col("sku", "text"),
			nullable("price", "numeric(12,2)"),
			nullable("big", "numeric(3,-2)"),
			nullable("tiny", "numeric(3,5)"),
			nullable("status", "varchar(8)"),
			nullable("cc", "char(2)"),
			nullable("at", "timestamptz(3)"),
			nullable("doc", "jsonb"),
			{Name: "city", Type: "text", Field: "address.city", Nullable: true},
		},
		Date:           config.Date{Field: "ts"},
		MaxRecordBytes: 256,
	})
}

func TestDecodeStrict(t *testing.T) {
	d := NewDecoder(typed(t))
	const ok = `"sku":"A","ts":"2026-01-01"`
	for _, tc := range []struct {
		name, value, want string
	}{
		// Invalid UTF-8 anywhere: in the key, a nested field, a member
		// name, a field no column reads. The position is the byte's
		// index in the Kafka value.
		{"invalid UTF-8 in the key", "{\"sku\":\"A\xffB\",\"ts\":\"2026-01-01\"}",
			`invalid-text: field "sku": byte 0xff at byte 9 is not valid UTF-8`},
		{"other invalid UTF-8 in the key", "{\"sku\":\"A\xfeB\",\"ts\":\"2026-01-01\"}",
			`invalid-text: field "sku": byte 0xfe at byte 9 is not valid UTF-8`},
		{"truncated sequence", "{\"sku\":\"A\xc3\",\"ts\":\"2026-01-01\"}",
			`invalid-text: field "sku": byte 0xc3 at byte 9 is not valid UTF-8`},
		{"overlong encoding", "{\"sku\":\"\xc0\xaf\",\"ts\":\"2026-01-01\"}",
			`invalid-text: field "sku": byte 0xc0 at byte 8 is not valid UTF-8`},
		{"UTF-8 encoded surrogate", "{\"sku\":\"\xed\xa0\x80\",\"ts\":\"2026-01-01\"}",
			`invalid-text: field "sku": byte 0xed at byte 8 is not valid UTF-8`},
		{"invalid UTF-8 nested", "{" + ok + ",\"address\":{\"city\":\"K\xf6ln\"}}",
			`invalid-text: field "address.city": byte 0xf6 at byte 49 is not valid UTF-8`},
		{"invalid UTF-8 in an array", "{" + ok + ",\"doc\":{\"tags\":[\"a\",\"\xff\"]}}",
			`invalid-text: field "doc.tags[1]": byte 0xff at byte 49 is not valid UTF-8`},
		{"invalid UTF-8 in a member name", "{" + ok + ",\"na\xffme\":1}",
			`invalid-text: member name of field "na\xffme": byte 0xff at byte 32 is not valid UTF-8`},
		{"invalid UTF-8 in an unread field", "{" + ok + ",\"note\":\"\xff\"}",
			`invalid-text: field "note": byte 0xff at byte 37 is not valid UTF-8`},
		// Lone surrogates in escapes, which encoding/json turns into U+FFFD.
		{"lone high surrogate in the key", `{"sku":"A\ud800B","ts":"2026-01-01"}`,
			`invalid-text: field "sku": escape \ud800 at byte 9 is a lone UTF-16 surrogate, not a character`},
		{"lone low surrogate", `{"sku":"\uDC00","ts":"2026-01-01"}`,
			`invalid-text: field "sku": escape \uDC00 at byte 8 is a lone UTF-16 surrogate, not a character`},
		{"high surrogate then a letter escape", `{"sku":"\ud83d\u0041","ts":"2026-01-01"}`,
			`invalid-text: field "sku": escape \ud83d at byte 8 is a lone UTF-16 surrogate, not a character`},
		{"high surrogate at the end", `{` + ok + `,"city":"x\ud83d"}`,
			`invalid-text: field "city": escape \ud83d at byte 38 is a lone UTF-16 surrogate, not a character`},
		{"two high surrogates", `{"sku":"\ud83d\ud83d","ts":"2026-01-01"}`,
			`invalid-text: field "sku": escape \ud83d at byte 8 is a lone UTF-16 surrogate, not a character`},
		{"lone surrogate in a member name", `{` + ok + `,"\udfff":1}`,
			`invalid-text: member name of field "�": escape \udfff at byte 30 is a lone UTF-16 surrogate, not a character`},
		{"jsonb with NUL", `{` + ok + `,"doc":{"a":"x\u0000"}}`,
			`invalid-text: field "doc" (column doc jsonb): a string holds a NUL character (\u0000), which jsonb cannot store`},
		// Modifiers.
		{"numeric(12,2) overflow", `{` + ok + `,"price":123456789012345.5}`,
			`out-of-range: field "price" (column price numeric(12,2)): "123456789012345.5" does not fit numeric(12,2)`},
		{"numeric(12,2) 10^10", `{` + ok + `,"price":"10000000000"}`,
			`out-of-range: field "price" (column price numeric(12,2)): "10000000000" does not fit numeric(12,2)`},
		{"numeric(12,2) 1e400", `{` + ok + `,"price":1e400}`,
			`out-of-range: field "price" (column price numeric(12,2)): "1` + strings.Repeat("0", 63) + `"… (401 bytes) does not fit numeric(12,2)`},
		{"numeric(12,2) scale", `{` + ok + `,"price":1.005}`,
			`out-of-range: field "price" (column price numeric(12,2)): "1.005" has more digits after the point than numeric(12,2) keeps (scale 2); PostgreSQL would round it`},
		{"numeric(3,-2) not a multiple of 100", `{` + ok + `,"big":12345}`,
			`out-of-range: field "big" (column big numeric(3,-2)): "12345" has more digits after the point than numeric(3,-2) keeps (scale -2); PostgreSQL would round it`},
		{"numeric(3,-2) too big", `{` + ok + `,"big":100000}`,
			`out-of-range: field "big" (column big numeric(3,-2)): "100000" does not fit numeric(3,-2)`},
		{"numeric(3,5) too big", `{` + ok + `,"tiny":0.01}`,
			`out-of-range: field "tiny" (column tiny numeric(3,5)): "0.01" does not fit numeric(3,5)`},
		{"varchar(8) too long", `{` + ok + `,"status":"delivered"}`,
			`out-of-range: field "status" (column status varchar(8)): "delivered" is 9 characters, longer than varchar(8) allows`},
		{"varchar(8) trailing spaces", `{` + ok + `,"status":"shipped   "}`,
			`out-of-range: field "status" (column status varchar(8)): "shipped   " is 10 characters, longer than varchar(8) allows`},
		{"varchar(8) 2 MiB", `{` + ok + `,"status":"` + strings.Repeat("x", 100) + `"}`,
			`out-of-range: field "status" (column status varchar(8)): "` + strings.Repeat("x", 64) + `"… (100 bytes) is 100 characters, longer than varchar(8) allows`},
		{"char(2) too long", `{` + ok + `,"cc":"DEU"}`,
			`out-of-range: field "cc" (column cc char(2)): "DEU" is 3 characters, longer than char(2) allows`},
		{"timestamptz(3) microseconds", `{` + ok + `,"at":"2026-01-01T00:00:00.0001Z"}`,
			`out-of-range: field "at" (column at timestamptz(3)): 2026-01-01T00:00:00.0001Z has more fractional digits than timestamptz(3) keeps; PostgreSQL would round it`},
		{"timestamp beyond PostgreSQL", `{` + ok + `,"at":9223372036854775807}`,
			`out-of-range: field "at" (column at timestamptz(3)): 292278994-08-17T07:12:55Z is outside PostgreSQL's timestamp range (4713 BC to 294276 AD)`},
		{"oversize", `{` + ok + `,"city":"` + strings.Repeat("x", 300) + `"}`,
			`oversize: record is 342 bytes (key 3, value 339), over max_record_bytes 256; not decoded, first 1024 bytes of key and value kept`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _, err := d.Decode([]byte("key"), []byte(tc.value), record.Position{TP: record.TP{Topic: "t", Partition: 0}, Offset: 1})
			if err == nil {
				t.Fatalf("Decode succeeded with %+v, want a bad record", r.Values)
			}
			got := badReason(t, err)
			if got != tc.want {
				t.Errorf("reason:\n got  %s\n want %s", got, tc.want)
			}
			if record.ClassOf(got) == "" {
				t.Errorf("reason %q has no class", got)
			}
		})
	}
}

// TestDecodeStrictAccepts holds the other side of each check: values that
// are exactly at a limit, or text that only looks suspicious.
func TestDecodeStrictAccepts(t *testing.T) {
	d := NewDecoder(typed(t))
	for _, tc := range []struct {
		name, value string
		col         string
		want        any
	}{
		{"surrogate pair", `{"sku":"\ud83d\ude00","ts":"2026-01-01"}`, "sku", "😀"},
		{"escaped backslash before u", `{"sku":"\\ud800","ts":"2026-01-01"}`, "sku", `\ud800`},
		{"four-byte UTF-8", `{"sku":"😀","ts":"2026-01-01"}`, "sku", "😀"},
		{"numeric(12,2) at its limit", `{"sku":"A","ts":"2026-01-01","price":"-9999999999.99"}`, "price", record.Numeric("-9999999999.99")},
		{"numeric(12,2) trailing zeros", `{"sku":"A","ts":"2026-01-01","price":"1.5000"}`, "price", record.Numeric("1.5")},
		{"numeric(3,-2) multiple of 100", `{"sku":"A","ts":"2026-01-01","big":99900}`, "big", record.Numeric("99900")},
		{"numeric(3,5) small", `{"sku":"A","ts":"2026-01-01","tiny":0.00099}`, "tiny", record.Numeric("0.00099")},
		{"numeric zero", `{"sku":"A","ts":"2026-01-01","price":-0.000}`, "price", record.Numeric("0")},
		{"varchar(8) counts characters", `{"sku":"A","ts":"2026-01-01","status":"Zürich-ß"}`, "status", "Zürich-ß"},
		{"char(2) drops padding", `{"sku":"A","ts":"2026-01-01","cc":"DE   "}`, "cc", "DE"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r, _, err := d.Decode(nil, []byte(tc.value), record.Position{})
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			if got := r.Values[columnIndex(t, d, tc.col)]; got != tc.want {
				t.Errorf("%s = %#v, want %#v", tc.col, got, tc.want)
			}
		})
	}
}

// TestDistinctTextKeysStayDistinct is the data loss: three keys
// that differ only in an invalid byte or a lone surrogate used to become
// one row. Each is refused now, and none shares an id with the valid key
// that U+FFFD would have produced.
func TestDistinctTextKeysStayDistinct(t *testing.T) {
	d := NewDecoder(typed(t))
	for _, v := range []string{"{\"sku\":\"A\xffB\",\"ts\":\"2026-01-01\"}", "{\"sku\":\"A\xfeB\",\"ts\":\"2026-01-01\"}", `{"sku":"A\ud800B","ts":"2026-01-01"}`} {
		if _, _, err := d.Decode(nil, []byte(v), record.Position{}); err == nil || record.ClassOf(err.Error()) != record.ClassText {
			t.Errorf("%q: %v, want an invalid-text bad record", v, err)
		}
	}
	if _, _, err := d.Decode(nil, []byte(`{"sku":"A\ufffdB","ts":"2026-01-01"}`), record.Position{}); err != nil {
		t.Errorf("a real U+FFFD is text like any other: %v", err)
	}
}

// TestNegativeZeroKeys pins the choice for "-0": in an integer or numeric
// key it is the same key as 0, because it is the same value, and
// PostgreSQL stores both as 0 (bigint and numeric have no negative zero).
// Two ids for one stored value would let a redelivery spelled "-0"
// create a second row. In a text key, "-0" is two characters, not 0.
func TestNegativeZeroKeys(t *testing.T) {
	ints := NewDecoder(pipeline(t, config.Pipeline{Key: []string{"id"}, Columns: []config.Column{col("id", "bigint")}, Date: config.Date{Field: "ts"}}))
	nums := NewDecoder(pipeline(t, config.Pipeline{Key: []string{"id"}, Columns: []config.Column{col("id", "numeric(5,2)")}, Date: config.Date{Field: "ts"}}))
	texts := NewDecoder(pipeline(t, config.Pipeline{Key: []string{"id"}, Columns: []config.Column{col("id", "text")}, Date: config.Date{Field: "ts"}}))
	id := func(d *Decoder, v string) record.ID {
		t.Helper()
		r, _, err := d.Decode(nil, []byte(`{"id":`+v+`,"ts":"2026-01-01"}`), record.Position{})
		if err != nil {
			t.Fatalf("Decode %s: %v", v, err)
		}
		return r.ID
	}
	for _, v := range []string{`-0`, `"-0"`, `-0.0`, `0e5`, `"-0e-3"`} {
		if id(ints, v) != id(ints, "0") {
			t.Errorf("bigint %s is not the key 0", v)
		}
		if id(nums, v) != id(nums, "0") {
			t.Errorf("numeric %s is not the key 0", v)
		}
	}
	if id(texts, `"-0"`) == id(texts, `"0"`) {
		t.Error(`text "-0" and "0" are one key`)
	}
}

func TestDeadLetterForOversize(t *testing.T) {
	d := NewDecoder(typed(t))
	value := []byte(`{"sku":"A","ts":"2026-01-01","city":"` + strings.Repeat("x", 3000) + `"}`)
	_, _, err := d.Decode([]byte("key"), value, record.Position{})
	dl := record.DeadLetterFor(record.Position{}, []byte("key"), value, err)
	if len(dl.Value) != record.KeptBytes || string(dl.Key) != "key" || !strings.HasPrefix(dl.Reason, "oversize: record is 3042 bytes") {
		t.Errorf("dead letter keeps %d bytes of value, key %q, reason %q", len(dl.Value), dl.Key, dl.Reason)
	}
	other := record.DeadLetterFor(record.Position{}, nil, []byte("[1]"), bad(record.ClassNotObject, "x"))
	if string(other.Value) != "[1]" {
		t.Errorf("a small dead letter lost bytes: %q", other.Value)
	}
}
