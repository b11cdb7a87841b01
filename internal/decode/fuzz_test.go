package decode

import (
	"bytes"
	"encoding/json"
	"errors"
	"math/big"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// fuzzDecoders are a simple pipeline and one keyed on every canonical type,
// so that both decoding and the key encoding see the fuzzer's values.
func fuzzDecoders(t testing.TB) []*Decoder {
	simple := pipeline(t, config.Pipeline{
		Name: "simple",
		Key:  []string{"id"},
		Columns: []config.Column{
			col("id", "bigint"),
			nullable("name", "text"),
			nullable("amount", "numeric"),
			nullable("ratio", "double precision"),
			nullable("at", "timestamptz"),
			{Name: "city", Type: "text", Field: "address.city", Nullable: true},
			nullable("payload", "jsonb"),
		},
		Date:    config.Date{Field: "ts", TimeZone: "Europe/Berlin"},
		Version: &config.Version{Field: "rev"},
	})
	keyed := pipeline(t, config.Pipeline{
		Name: "keyed",
		Key:  []string{"tenant", "n", "i", "s", "amount", "at", "ref", "day", "flag"},
		Columns: []config.Column{
			col("tenant", "text"),
			col("n", "bigint"),
			col("i", "integer"),
			col("s", "smallint"),
			col("amount", "numeric"),
			col("at", "timestamptz"),
			col("ref", "uuid"),
			col("day", "date"),
			col("flag", "boolean"),
			nullable("extra", "jsonb"),
		},
		Date:    config.Date{Field: "at", TimeZone: "America/New_York"},
		Version: &config.Version{Field: "meta.v", Type: "timestamptz"},
	})
	return []*Decoder{NewDecoder(simple), NewDecoder(keyed), NewDecoder(typed(t))}
}

// fuzzSeeds is the committed seed corpus: records that decode (with the
// pipeline that takes them) and near misses that do not.
var fuzzSeeds = []struct{ decodes, value string }{
	{"simple", `{"id":1,"ts":"2026-03-29T01:30:00Z","rev":3}`},
	{"simple", `{"id":"9223372036854775807","name":"Grüße","amount":"1.50","ratio":0.5,"at":1774747800000,"address":{"city":"Köln"},"payload":{"a":[1,null]},"ts":"2026-03-29","rev":1.0}`},
	{"simple", `{"id":1e2,"ts":1793503800000,"rev":"-4","amount":-0.00,"at":"2026-11-01T01:30:00-05:00"}`},
	{"keyed", `{"tenant":"acme","n":1,"i":"2","s":3.0,"amount":1e-3,"at":"2026-11-01T01:30:00-04:00","ref":"6ba7b810-9dad-11d1-80b4-00c04fd430c8","day":"2026-11-01","flag":true,"meta":{"v":"2026-11-01T06:00:00Z"}}`},
	{"keyed", `{"tenant":"","n":-1,"i":-2147483648,"s":-32768,"amount":"123456789.000","at":0,"ref":"6BA7B8109DAD11D180B400C04FD430C8","day":"1969-12-31","flag":false,"meta":{"v":0},"extra":"x"}`},
	{"", `{"id":1.5,"ts":"2026-03-29T01:30:00Z","rev":3}`},
	{"", `{"id":1,"ts":"2026-02-30","rev":3}`},
	{"", `{"id":1,"ts":"2026-03-29T01:30:00Z","rev":3}}`},
	{"", `[{"id":1}]`},
	{"", `{"id":1,"name":"a\u0000b","ts":"2026-03-29","rev":0}`},
	{"simple", `{"id":1,"amount":1e-999,"ts":"2026-03-29","rev":0}`},
	{"", `{"id":1,"amount":1e-1001,"ts":"2026-03-29","rev":0}`},
	{"", `not json`},
	// Strict text and column modifiers (the typed pipeline).
	{"typed", `{"sku":"A\ud83d\ude00","ts":"2026-01-01","price":"9999999999.99","big":100,"tiny":0.00001,"status":"Zürich-ß","cc":"DE ","at":"2026-01-01T00:00:00.123Z","doc":{"k":["\u00e9"]}}`},
	{"typed", `{"sku":"\\ud800","ts":"2026-01-01","price":-0,"city":"\ufffd"}`},
	{"", "{\"sku\":\"A\xffB\",\"ts\":\"2026-01-01\"}"},
	{"", "{\"sku\":\"A\",\"ts\":\"2026-01-01\",\"x\xfe\":1}"},
	{"", `{"sku":"A\ud800B","ts":"2026-01-01"}`},
	{"", `{"sku":"A\udc00","ts":"2026-01-01"}`},
	{"", `{"sku":"A","ts":"2026-01-01","doc":{"a":["\ud83d\u0041"]}}`},
	{"", `{"sku":"A","ts":"2026-01-01","price":123456789012345.5}`},
	{"", `{"sku":"A","ts":"2026-01-01","price":1.005}`},
	{"", `{"sku":"A","ts":"2026-01-01","status":"delivered"}`},
	{"", `{"sku":"A","ts":"2026-01-01","at":"2026-01-01T00:00:00.0001Z"}`},
	{"", `{"sku":"A","ts":"2026-01-01","doc":{"a":"\u0000"}}`},
}

// TestFuzzSeeds keeps the corpus honest: the seeds meant to decode do, so
// that the fuzzer starts from the success path.
func TestFuzzSeeds(t *testing.T) {
	decoders := fuzzDecoders(t)
	for _, seed := range fuzzSeeds {
		for _, d := range decoders {
			_, _, err := d.Decode(nil, []byte(seed.value), record.Position{})
			if want := seed.decodes == d.Pipeline().Name; (err == nil) != want {
				t.Errorf("%s decodes %s: %v, want success %v", d.Pipeline().Name, seed.value, err, want)
			}
		}
	}
}

func FuzzDecode(f *testing.F) {
	for _, seed := range fuzzSeeds {
		f.Add([]byte(seed.value))
	}
	decoders := fuzzDecoders(f)
	f.Fuzz(func(t *testing.T, value []byte) {
		for _, d := range decoders {
			pos := record.Position{TP: record.TP{Topic: "topic", Partition: 1}, Offset: 2}
			r, date, err := d.Decode([]byte("k"), value, pos)
			if err != nil {
				var br *record.BadRecord
				if !errors.As(err, &br) || br.Reason == "" {
					t.Fatalf("%s: error %v (%T) is not a *record.BadRecord with a reason", d.Pipeline().Name, err, err)
				}
				continue
			}
			if len(r.Values) != len(d.Pipeline().Columns) || date.IsZero() {
				t.Fatalf("%s: %d values for %d columns, date %s", d.Pipeline().Name, len(r.Values), len(d.Pipeline().Columns), date)
			}
			r2, date2, err := d.Decode([]byte("k"), value, pos)
			if err != nil || r2.ID != r.ID || date2 != date || r2.Version != r.Version || !reflect.DeepEqual(r2.Values, r.Values) {
				t.Fatalf("%s: second decode differs: %v, id %s/%s, date %s/%s, version %d/%d",
					d.Pipeline().Name, err, r.ID, r2.ID, date, date2, r.Version, r2.Version)
			}
			// The id depends on the values, never on their spelling: the same
			// object written out again decodes to the same id and date.
			dec := json.NewDecoder(bytes.NewReader(value))
			dec.UseNumber()
			var obj map[string]any
			if err := dec.Decode(&obj); err != nil {
				t.Fatalf("%s: decoded, but not as an object: %v", d.Pipeline().Name, err)
			}
			again, err := json.Marshal(obj)
			if err != nil {
				t.Fatalf("%s: re-encode: %v", d.Pipeline().Name, err)
			}
			r3, date3, err := d.Decode(nil, again, pos)
			if err != nil || r3.ID != r.ID || date3 != date || r3.Version != r.Version {
				t.Fatalf("%s: re-encoded %s decodes to %v, id %s/%s, date %s/%s, version %d/%d",
					d.Pipeline().Name, again, err, r.ID, r3.ID, date, date3, r.Version, r3.Version)
			}
		}
	})
}

// FuzzCheckJSON holds the strict text check to what encoding/json does with
// the same bytes: what it accepts decodes without any U+FFFD the input did
// not spell out, and what it refuses as invalid text is valid JSON that
// encoding/json would have changed.
func FuzzCheckJSON(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s.value))
	}
	f.Add([]byte(`{"a":"\\ud800","b":"\ud800\udc00"}`))
	f.Add([]byte(`{"\ud800":1}`))
	f.Add([]byte("{\"a\":[\"\xed\xa0\x80\"]}"))
	f.Fuzz(func(t *testing.T, v []byte) {
		err := checkJSON(v)
		spelled := bytes.Contains(v, []byte("\uFFFD")) || bytes.Contains(bytes.ToLower(v), []byte(`\ufffd`))
		var obj any
		dec := json.NewDecoder(bytes.NewReader(v))
		dec.UseNumber()
		jerr := dec.Decode(&obj)
		if jerr == nil && dec.More() {
			jerr = errors.New("trailing data")
		}
		changed := !spelled && containsFFFD(obj)
		if err == nil {
			if jerr != nil || !utf8.Valid(v) || changed {
				t.Fatalf("accepted %q: json %v, valid UTF-8 %v, U+FFFD appeared %v", v, jerr, utf8.Valid(v), changed)
			}
			if _, ok := obj.(map[string]any); !ok {
				t.Fatalf("accepted %q, which is not an object", v)
			}
			return
		}
		var br *record.BadRecord
		if !errors.As(err, &br) || record.ClassOf(br.Reason) != br.Class || !utf8.ValidString(br.Reason) {
			t.Fatalf("%q: error %v is not a classed bad record with a valid reason", v, err)
		}
		if br.Class == record.ClassText && (jerr != nil || (utf8.Valid(v) && !spelled && !changed)) {
			t.Fatalf("%q refused as invalid text, but encoding/json reads it unchanged (%v)", v, jerr)
		}
	})
}

func containsFFFD(v any) bool {
	return anyString(v, func(s string) bool { return strings.ContainsRune(s, utf8.RuneError) })
}

// FuzzFitNumeric holds fitNumeric to the definition: numeric(p,s) stores v
// unchanged iff v·10^s is an integer of at most p digits.
func FuzzFitNumeric(f *testing.F) {
	for _, s := range []string{"0", "-0.5", "123456789012345.5", "1.005", "12345", "100000", "0.001", "0.01", "99900", "9999999999.99", "1e400"} {
		f.Add(s, uint16(12), int16(2))
		f.Add(s, uint16(3), int16(-2))
		f.Add(s, uint16(3), int16(5))
	}
	f.Fuzz(func(t *testing.T, s string, p uint16, sc int16) {
		ct := config.ColumnType{Base: "numeric", Precision: int(p%config.MaxNumericPrecision) + 1, Scale: int(sc % (config.MaxNumericScale + 1)), HasPrecision: true}
		n, err := toNumeric(s)
		if err != nil {
			return
		}
		r, ok := new(big.Rat).SetString(string(n))
		if !ok {
			t.Fatalf("canonical %q does not parse", n)
		}
		scaled := new(big.Rat).Set(r)
		pow := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(abs(ct.Scale))), nil)
		if ct.Scale >= 0 {
			scaled.Mul(scaled, new(big.Rat).SetInt(pow))
		} else {
			scaled.Quo(scaled, new(big.Rat).SetInt(pow))
		}
		limit := new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(ct.Precision)), nil)
		want := scaled.IsInt() && new(big.Int).Abs(scaled.Num()).Cmp(limit) < 0
		if got := fitNumeric(ct, n) == nil; got != want {
			t.Fatalf("%s in %s: fits %v, want %v", n, ct, got, want)
		}
	})
}

func abs(n int) int {
	if n < 0 {
		return -n
	}
	return n
}
