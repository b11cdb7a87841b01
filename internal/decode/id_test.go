package decode

import (
	"bytes"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

var update = flag.Bool("update", false, "write missing golden vectors to testdata (never changes a pinned one)")

const goldenIDs = "testdata/record_ids.json"

// idVector is one golden record id: key values given as JSON, exactly as a
// producer might spell them, converted to the column types and hashed.
type idVector struct {
	Name   string          `json:"name"`
	Types  []string        `json:"types"`
	Values json.RawMessage `json:"values"`
	ID     string          `json:"id"`
}

func (v idVector) input() string { return fmt.Sprintf("%q %s", v.Types, compactJSON(v.Values)) }

func compactJSON(b []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		return string(b)
	}
	return buf.String()
}

// idInputs are the vectors -update writes. Values that must share an id are
// checked by TestRecordIDEquivalence; the file pins what the ids are.
var idInputs = []struct {
	name   string
	types  []string
	values string
}{
	{"text ascii", []string{"text"}, `["order-1"]`},
	{"text unicode", []string{"text"}, `["Grüße, 世界 ✓"]`},
	{"text escaped unicode", []string{"text"}, `["Gr\u00fc\u00dfe, \u4e16\u754c \u2713"]`},
	{"text empty", []string{"text"}, `[""]`},
	{"text digit", []string{"text"}, `["1"]`},
	{"bigint 0", []string{"bigint"}, `[0]`},
	{"bigint 1", []string{"bigint"}, `[1]`},
	{"bigint -1", []string{"bigint"}, `[-1]`},
	{"bigint max", []string{"bigint"}, `[9223372036854775807]`},
	{"bigint min", []string{"bigint"}, `[-9223372036854775808]`},
	{"bigint 1.0", []string{"bigint"}, `[1.0]`},
	{"bigint string", []string{"bigint"}, `["1"]`},
	{"bigint 1e2", []string{"bigint"}, `[1e2]`},
	{"integer 1", []string{"integer"}, `[1]`},
	{"integer -1", []string{"integer"}, `[-1]`},
	{"integer max", []string{"integer"}, `[2147483647]`},
	{"smallint 1", []string{"smallint"}, `[1]`},
	{"smallint min", []string{"smallint"}, `[-32768]`},
	{"numeric 1.5", []string{"numeric"}, `[1.5]`},
	{"numeric 1.50", []string{"numeric"}, `[1.50]`},
	{"numeric string 1.5", []string{"numeric"}, `["1.5"]`},
	{"numeric 1e2", []string{"numeric"}, `[1e2]`},
	{"numeric 100", []string{"numeric"}, `[100]`},
	{"numeric 100.000", []string{"numeric"}, `[100.000]`},
	{"numeric 0", []string{"numeric"}, `[0]`},
	{"numeric -0", []string{"numeric"}, `[-0]`},
	{"numeric -0.00", []string{"numeric"}, `["-0.00"]`},
	{"numeric small", []string{"numeric"}, `[0.001]`},
	{"numeric negative", []string{"numeric"}, `[-12.340]`},
	{"numeric 1.25e-3", []string{"numeric"}, `[1.25e-3]`},
	{"numeric wide", []string{"numeric"}, `["123456789012345678901234567890.123456789"]`},
	{"timestamptz utc", []string{"timestamptz"}, `["2026-03-29T01:30:00Z"]`},
	{"timestamptz berlin", []string{"timestamptz"}, `["2026-03-29T03:30:00+02:00"]`},
	{"timestamptz new york", []string{"timestamptz"}, `["2026-03-28T21:30:00-04:00"]`},
	{"timestamptz epoch ms", []string{"timestamptz"}, `[1774747800000]`},
	{"timestamptz micros", []string{"timestamptz"}, `["2026-03-29T01:30:00.123456Z"]`},
	{"timestamptz nanos truncated", []string{"timestamptz"}, `["2026-03-29T01:30:00.123456789Z"]`},
	{"timestamptz epoch", []string{"timestamptz"}, `["1970-01-01T00:00:00Z"]`},
	{"date", []string{"date"}, `["2026-03-29"]`},
	{"date epoch", []string{"date"}, `["1970-01-01"]`},
	{"date before epoch", []string{"date"}, `["1969-12-31"]`},
	{"uuid", []string{"uuid"}, `["6ba7b810-9dad-11d1-80b4-00c04fd430c8"]`},
	{"uuid upper case", []string{"uuid"}, `["6BA7B810-9DAD-11D1-80B4-00C04FD430C8"]`},
	{"uuid without dashes", []string{"uuid"}, `["6ba7b8109dad11d180b400c04fd430c8"]`},
	{"uuid nil", []string{"uuid"}, `["00000000-0000-0000-0000-000000000000"]`},
	{"boolean true", []string{"boolean"}, `[true]`},
	{"boolean false", []string{"boolean"}, `[false]`},
	{"text pair a|bc", []string{"text", "text"}, `["a", "bc"]`},
	{"text pair ab|c", []string{"text", "text"}, `["ab", "c"]`},
	{"text pair empty|abc", []string{"text", "text"}, `["", "abc"]`},
	{"bigint pair 1|2", []string{"bigint", "bigint"}, `[1, 2]`},
	{"bigint pair 2|1", []string{"bigint", "bigint"}, `[2, 1]`},
	{"tenant and id", []string{"text", "bigint"}, `["acme", 42]`},
	{"mixed key", []string{"uuid", "date", "numeric", "boolean", "timestamptz", "smallint"},
		`["6ba7b810-9dad-11d1-80b4-00c04fd430c8", "2026-11-01", "-0.50", false, "2026-11-01T01:30:00-04:00", 7]`},
}

func TestRecordIDGolden(t *testing.T) {
	pinned := map[string]idVector{}
	var file []idVector
	b, err := os.ReadFile(goldenIDs)
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &file); err != nil {
			t.Fatalf("%s: %v", goldenIDs, err)
		}
	case !*update:
		t.Fatalf("%v (run go test -run TestRecordIDGolden -update once to create it)", err)
	}
	for _, v := range file {
		if _, dup := pinned[v.input()]; dup {
			t.Errorf("%s: %s is listed twice", goldenIDs, v.input())
		}
		pinned[v.input()] = v
		got := keyID(t, v.Types, string(v.Values)).String()
		if got != v.ID {
			t.Errorf("%s: record id of %s = %s, pinned %s: the canonical encoding changed, which is a migration",
				v.Name, v.input(), got, v.ID)
		}
	}

	var missing []idVector
	for _, in := range idInputs {
		v := idVector{Name: in.name, Types: in.types, Values: json.RawMessage(in.values)}
		if _, ok := pinned[v.input()]; !ok {
			v.ID = keyID(t, in.types, in.values).String()
			missing = append(missing, v)
		}
	}
	if len(missing) == 0 {
		return
	}
	if !*update {
		t.Fatalf("%d inputs have no pinned id in %s, first %s; run go test -run TestRecordIDGolden -update",
			len(missing), goldenIDs, missing[0].input())
	}
	// Only new vectors are written: a pinned id is never rewritten, since a
	// changed id would silently re-key every stored row.
	// One vector a line, values spelled as given, so that a diff of the
	// file reads as a list of keys.
	var out bytes.Buffer
	out.WriteString("[\n")
	for i, v := range append(file, missing...) {
		enc := json.NewEncoder(&out)
		enc.SetEscapeHTML(false)
		out.WriteString("  ")
		if err := enc.Encode(v); err != nil {
			t.Fatal(err)
		}
		if i < len(file)+len(missing)-1 {
			out.Truncate(out.Len() - 1)
			out.WriteString(",\n")
		}
	}
	out.WriteString("]")
	if err := os.MkdirAll(filepath.Dir(goldenIDs), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(goldenIDs, append(out.Bytes(), '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("wrote %d new vectors to %s", len(missing), goldenIDs)
}

// TestRecordIDEquivalence states which spellings are one key and which keys
// must differ: within a group every id is equal, across groups all differ.
func TestRecordIDEquivalence(t *testing.T) {
	type key struct {
		types  []string
		values string
	}
	k := func(types, values string) key { return key{strings.Split(types, ","), values} }
	groups := []struct {
		name string
		keys []key
	}{
		{"bigint one", []key{k("bigint", `[1]`), k("bigint", `[1.0]`), k("bigint", `["1"]`), k("bigint", `[1e0]`),
			k("bigint", `["1.000"]`), k("bigint", `[0.1e1]`), k("integer", `[1]`), k("smallint", `[1.0]`)}},
		{"bigint zero", []key{k("bigint", `[0]`), k("bigint", `[-0]`), k("integer", `["0"]`), k("smallint", `[0.0]`)}},
		{"bigint minus one", []key{k("bigint", `[-1]`), k("integer", `[-1]`), k("smallint", `["-1"]`)}},
		{"bigint hundred", []key{k("bigint", `[100]`), k("bigint", `[1e2]`), k("integer", `[1E+2]`)}},
		{"bigint max", []key{k("bigint", `[9223372036854775807]`), k("bigint", `["9223372036854775807"]`),
			k("bigint", `[9223372036854775807.0]`)}},
		{"text one", []key{k("text", `["1"]`)}},
		{"text empty", []key{k("text", `[""]`)}},
		{"text unicode", []key{k("text", `["é"]`), k("text", `["\u00e9"]`)}},
		// NFD spelling of é: text is hashed byte for byte, not normalized.
		{"text unicode decomposed", []key{k("text", `["e\u0301"]`)}},
		{"numeric 1.5", []key{k("numeric", `[1.5]`), k("numeric", `[1.50]`), k("numeric", `["1.5"]`),
			k("numeric", `[15e-1]`), k("numeric", `["0.15E1"]`)}},
		{"numeric one", []key{k("numeric", `[1]`), k("numeric", `[1.0]`), k("numeric", `["1"]`)}},
		{"numeric hundred", []key{k("numeric", `[1e2]`), k("numeric", `[100]`), k("numeric", `[100.00]`)}},
		{"numeric zero", []key{k("numeric", `[0]`), k("numeric", `[-0]`), k("numeric", `[0.000]`),
			k("numeric", `["-0.0"]`), k("numeric", `[0e10]`)}},
		{"numeric minus 1.5", []key{k("numeric", `[-1.5]`), k("numeric", `["-1.500"]`)}},
		{"instant", []key{k("timestamptz", `["2026-03-29T01:30:00Z"]`), k("timestamptz", `["2026-03-29T03:30:00+02:00"]`),
			k("timestamptz", `["2026-03-28T21:30:00-04:00"]`), k("timestamptz", `[1774747800000]`),
			k("timestamptz", `["2026-03-29T01:30:00.000000Z"]`), k("timestamptz", `["2026-03-29T01:30:00.0000009Z"]`)}},
		{"instant plus 1µs", []key{k("timestamptz", `["2026-03-29T01:30:00.000001Z"]`)}},
		{"date", []key{k("date", `["2026-03-29"]`)}},
		{"midnight", []key{k("timestamptz", `["2026-03-29T00:00:00Z"]`)}},
		{"uuid", []key{k("uuid", `["6ba7b810-9dad-11d1-80b4-00c04fd430c8"]`), k("uuid", `["6BA7B810-9DAD-11D1-80B4-00C04FD430C8"]`),
			k("uuid", `["6ba7b8109dad11d180b400c04fd430c8"]`)}},
		{"true", []key{k("boolean", `[true]`)}},
		{"false", []key{k("boolean", `[false]`)}},
		{"a|bc", []key{k("text,text", `["a", "bc"]`)}},
		{"ab|c", []key{k("text,text", `["ab", "c"]`)}},
		{"abc", []key{k("text", `["abc"]`)}},
		{"|abc", []key{k("text,text", `["", "abc"]`)}},
		{"1|2", []key{k("bigint,bigint", `[1, 2]`), k("integer,smallint", `["1", 2.0]`)}},
		{"2|1", []key{k("bigint,bigint", `[2, 1]`)}},
		{"1.5|2", []key{k("numeric,numeric", `[1.5, 2]`)}},
		{"1|5.2", []key{k("numeric,numeric", `[1, 5.2]`)}},
	}
	first := map[record.ID]string{}
	for _, g := range groups {
		var gid record.ID
		for i, key := range g.keys {
			id := keyID(t, key.types, key.values)
			if i == 0 {
				gid = id
				if other, ok := first[id]; ok {
					t.Errorf("group %q has the same id as group %q", g.name, other)
				}
				first[id] = g.name
				continue
			}
			if id != gid {
				t.Errorf("group %q: %q %s has id %s, want %s as %q %s", g.name,
					key.types, key.values, id, gid, g.keys[0].types, g.keys[0].values)
			}
		}
	}
}

// TestRecordIDThroughDecode checks the same through Decode, whose values are
// what actually gets hashed.
func TestRecordIDThroughDecode(t *testing.T) {
	bigint := NewDecoder(pipeline(t, pipelineWithKey("bigint")))
	text := NewDecoder(pipeline(t, pipelineWithKey("text")))
	id := func(d *Decoder, k string) record.ID {
		t.Helper()
		r, _, err := d.Decode(nil, []byte(`{"k":`+k+`,"ts":"2026-01-01"}`), record.Position{})
		if err != nil {
			t.Fatalf("decode k=%s: %v", k, err)
		}
		return r.ID
	}
	one := id(bigint, `1`)
	for _, k := range []string{`1.0`, `"1"`, `1e0`, `"1.0"`, `10e-1`} {
		if got := id(bigint, k); got != one {
			t.Errorf("bigint k=%s: id %s, want %s as for k=1", k, got, one)
		}
	}
	if got := id(text, `"1"`); got == one {
		t.Errorf(`text k="1" has the id of bigint k=1 (%s)`, got)
	}
	if got := id(bigint, `2`); got == one {
		t.Errorf("bigint k=2 has the id of k=1")
	}
	if got, want := one, keyID(t, []string{"bigint"}, `[1]`); got != want {
		t.Errorf("Decode id %s differs from record.RecordID %s", got, want)
	}

	// An unconstrained numeric key stages the scale it is given (1.50
	// stays 1.50) and hashes the value: the id is 1.5's.
	numeric := NewDecoder(pipeline(t, pipelineWithKey("numeric")))
	r, _, err := numeric.Decode(nil, []byte(`{"k":"1.50","ts":"2026-01-01"}`), record.Position{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Values[0] != record.Numeric("1.50") {
		t.Errorf("numeric k=1.50 staged as %#v, want 1.50", r.Values[0])
	}
	if got, want := r.ID, keyID(t, []string{"numeric"}, `[1.5]`); got != want {
		t.Errorf("numeric k=1.50: id %s, want %s as for 1.5", got, want)
	}
	if got, want := r.ID, record.RecordID([]string{"numeric"}, []any{record.Numeric("1.5")}); got != want {
		t.Errorf("numeric k=1.50: id %s, want %s as for the canonical 1.5", got, want)
	}
}

func pipelineWithKey(typ string) config.Pipeline {
	return config.Pipeline{Key: []string{"k"}, Columns: []config.Column{col("k", typ)}, Date: config.Date{Field: "ts"}}
}

func TestRecordIDPanicsOnUncanonicalTypes(t *testing.T) {
	for _, tc := range []struct {
		typ string
		v   any
	}{
		{"jsonb", json.RawMessage(`{}`)},
		{"double precision", 1.5},
		{"text", nil},
		{"bigint", int(1)},
		{"timestamptz", time.Duration(1)},
	} {
		t.Run(fmt.Sprintf("%T", tc.v), func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Errorf("RecordID(%s, %#v) did not panic", tc.typ, tc.v)
				}
			}()
			record.RecordID([]string{tc.typ}, []any{tc.v})
		})
	}
}

func TestIDString(t *testing.T) {
	id := record.ID{0x00, 0x01, 0xab, 0xff, 15: 0x10}
	if got, want := id.String(), "0001abff000000000000000000000010"; got != want {
		t.Errorf("String() = %s, want %s", got, want)
	}
	u, err := id.UUIDValue()
	if err != nil || !u.Valid || u.Bytes != [16]byte(id) {
		t.Errorf("UUIDValue() = %+v, %v", u, err)
	}
}
