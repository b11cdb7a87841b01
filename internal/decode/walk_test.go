package decode

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/idemsink/idemsink/internal/config"
)

// membersOld is scan's member search as it was before walk: eachMember
// over a value checkJSON accepted.
func (d *Decoder) membersOld(value []byte) [][]byte {
	raws := make([][]byte, len(d.tops))
	eachMember(value[skipSpace(value, 0):], func(key, raw []byte) {
		if idx, ok := d.tops[string(key)]; ok {
			raws[idx] = raw
		} else if bytes.IndexByte(key, '\\') >= 0 {
			var k string
			if json.Unmarshal(append(append([]byte{'"'}, key...), '"'), &k) == nil {
				if idx, ok := d.tops[k]; ok {
					raws[idx] = raw
				}
			}
		}
	})
	return raws
}

// walkSeeds are near misses of each rule walk checks, beside fuzzSeeds.
var walkSeeds = []string{
	`{}`, ` {} `, "\t{\r\n}\n", `{} {}`, `{`, `}`, `{"a"}`, `{"a":}`, `{"a":1,}`, `{,"a":1}`, `{"a" : 1 , "b" : [ ] }`,
	`{"id":-0,"n":0.5e+3,"i":1E-2,"s":-12.0}`, `{"id":01}`, `{"id":1.}`, `{"id":.5}`, `{"id":-}`, `{"id":1e}`, `{"id":+1}`,
	`{"id":true,"ts":false,"rev":null}`, `{"id":tru}`, `{"id":nul}`, `{"id":truex}`,
	`{"a":[1,[2,{"b":[]}],{}]}`, `{"a":[1,]}`, `{"a":[,1]}`, `{"a":{"b":1,}}`, `{"a":{1:2}}`,
	`{"\u0069d":1,"id":2,"t\u0073":"x"}`, `{"id":"\"\\\/\b\f\n\r\t"}`, `{"id":"\x"}`, `{"id":"\u12"}`, `{"id":"\u12G4"}`,
	`{"id":"\ud83d\ude00"}`, `{"id":"\uD83D\uDE00"}`, `{"id":"\ud83d"}`, `{"id":"\ud83d\u0041"}`, `{"id":"\ude00"}`,
	`{"id":"\ud83d\ud83d\ude00"}`, `{"id":"\\ud800"}`, `{"id":"\ud83d\n"}`,
	"{\"id\":\"\x01\"}", "{\"id\":\"\x7f\xc3\xa9\"}", "{\"id\":\"\xed\xa0\x80\"}", "{\"id\":\"\xc3\"}", "{\"id\":\"\xf4\x90\x80\x80\"}",
	"{\"id\":\"\xef\xbf\xbd\"}", "{\"\xff\":1}", "{\"id\":1}\x00", `[1]`, `"x"`, ``, ` `,
}

// nested is an object holding n objects and arrays, one in the other:
// depth n+1 in all.
func nested(n int) []byte {
	return []byte(`{"a":` + strings.Repeat(`[`, n) + strings.Repeat(`]`, n) + `}`)
}

// FuzzWalk holds walk to what it replaces: it accepts exactly what
// checkJSON accepts, and finds the raw values the old member search found.
// testdata/fuzz/FuzzWalk holds the committed corpus.
func FuzzWalk(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s.value))
	}
	for _, s := range walkSeeds {
		f.Add([]byte(s))
	}
	decoders := fuzzDecoders(f)
	f.Fuzz(func(t *testing.T, v []byte) {
		for _, d := range decoders {
			raws := make([][]byte, len(d.tops))
			ok := d.walk(v, raws)
			err := checkJSON(v)
			if ok != (err == nil) {
				t.Fatalf("%s: walk %v, checkJSON %v on %q", d.Pipeline().Name, ok, err, v)
			}
			if !ok {
				continue
			}
			want := d.membersOld(v)
			for k, i := range d.tops {
				// The same bytes of v, not merely equal ones: a duplicate
				// member must resolve the same way.
				if !sameSlice(raws[i], want[i]) {
					t.Fatalf("%s: member %q: walk %q, old search %q in %q", d.Pipeline().Name, k, raws[i], want[i], v)
				}
			}
		}
	})
}

func sameSlice(a, b []byte) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return len(a) == len(b) && &a[0] == &b[0]
}

func TestWalkDepth(t *testing.T) {
	d := NewDecoder(typed(t))
	raws := make([][]byte, len(d.tops))
	for _, n := range []int{1, maxDepth - 1, maxDepth} {
		v := nested(n)
		ok := d.walk(v, raws)
		if err := checkJSON(v); ok != (err == nil) {
			t.Errorf("depth %d: walk %v, checkJSON %v", n+1, ok, err)
		}
		if want := n+1 <= maxDepth; ok != want {
			t.Errorf("depth %d: walk %v, want %v", n+1, ok, want)
		}
	}
}

// TestWalkCorpusCommitted: FuzzWalk's corpus is in the tree.
func TestWalkCorpusCommitted(t *testing.T) {
	entries, err := os.ReadDir("testdata/fuzz/FuzzWalk")
	if err != nil || len(entries) == 0 {
		t.Errorf("no committed corpus for FuzzWalk: %v", err)
	}
}

// plainTypes are the column types FuzzPlain converts to: every base type,
// with and without modifiers.
var plainTypes = []string{
	"text", "varchar(3)", "char(4)", "bigint", "integer", "smallint", "numeric", "numeric(5,2)", "numeric(3,-2)",
	"real", "double precision", "boolean", "date", "timestamptz", "timestamptz(3)", "timestamp", "timestamp(0)",
	"time", "time(2)", "uuid", "bytea", "jsonb",
}

// plainSeeds are raw JSON values, plain and not, near the edges of the
// types' spellings.
var plainSeeds = []string{
	`"abc"`, `"abcd "`, `"a\u0000"`, "\"a\x00\"", `"Zoë"`, `""`, `"a\"b"`, `0`, `-0`, `1`, `-1`, `007`, `"007"`, `"+7"`, `1.0`, `1e2`,
	`9223372036854775807`, `9223372036854775808`, `-9223372036854775808`, `2147483648`, `32767`, `-32769`, `"12"`, `" 12"`,
	`12.30`, `"12.30"`, `123.456`, `-0.00`, `99999.995`, `1e-3`, `1.5e300`, `1e400`, `3.4028235e38`, `3.5e38`, `1e-50`,
	`true`, `false`, `null`, `"true"`, `{}`, `[]`, `{"a":1}`,
	`"2026-03-29"`, `"2026-02-30"`, `"2026-3-29"`, `"0001-01-01"`,
	`"2026-03-29T01:30:00Z"`, `"2026-03-29T01:30:00.123456789+02:00"`, `"2026-03-29T01:30:00.1234Z"`, `"2026-03-29 01:30:00"`,
	`"2026-03-29T01:30:00"`, `"2026-03-29T01:30:00.5"`, `"2026-03-29T24:00:00Z"`, `"2026-03-29T01:30:00+24:00"`, `1774747800000`,
	`1774747800001`, `-62135596800000`, `9223372036854775807`, `"294277-01-01T00:00:00Z"`,
	`"12:34:56"`, `"24:00:00"`, `"24:00:00.000001"`, `"12:34:56.123456789"`, `"12:34:56.12"`, `"12:34:56.125"`, `"1:2:3"`,
	`"6ba7b810-9dad-11d1-80b4-00c04fd430c8"`, `"6BA7B8109DAD11D180B400C04FD430C8"`, `"----6ba7b8109dad11d180b400c04fd430c8"`,
	`"6ba7b810-9dad-11d1-80b4-00c04fd430c-8"`, `"6ba7b810-9dad-11d1-80b4-00c04fd430cg"`, `"6ba7b810-9dad-11d1-80b4-00c04fd430c"`,
	`"aGVsbG8="`, `"aGVsbG8"`, `"aGVs\nbG8="`, `"=="`,
}

// FuzzPlain holds the plain path to the way through toAny and convert:
// when plain converts a value, convert returns the same value, of the same
// type. (When it does not, Decode takes convert's way, errors and all.)
func FuzzPlain(f *testing.F) {
	for i := range plainTypes {
		for _, s := range plainSeeds {
			f.Add(uint8(i), []byte(s))
		}
	}
	types := make([]config.ColumnType, len(plainTypes))
	for i, s := range plainTypes {
		c := config.Column{Type: s}
		types[i] = c.Typ()
	}
	f.Fuzz(func(t *testing.T, typ uint8, raw []byte) {
		ct := types[int(typ)%len(types)]
		// A raw value as scan hands it over: a member of a valid record.
		v := append(append([]byte(`{"v":`), raw...), '}')
		if checkJSON(v) != nil {
			return
		}
		raw = bytes.TrimSpace(raw)
		got, ok := plain(ct, raw)
		if !ok {
			return
		}
		want, err := convert(ct, toAny(raw))
		if err != nil {
			t.Fatalf("%s %s: plain %#v, convert fails: %v", ct, raw, got, err)
		}
		if !reflect.DeepEqual(got, want) || fmt.Sprintf("%T", got) != fmt.Sprintf("%T", want) {
			t.Fatalf("%s %s: plain %#v (%T), convert %#v (%T)", ct, raw, got, got, want, want)
		}
	})
}

// TestPlainTakes checks the plain path takes the values it is for, so that
// FuzzPlain has something to compare.
func TestPlainTakes(t *testing.T) {
	for _, tc := range []struct{ typ, raw string }{
		{"text", `"SKU-4711"`}, {"varchar(3)", `"abc"`}, {"char(4)", `"ab  "`}, {"bigint", `123456789`}, {"bigint", `"-12"`},
		{"integer", `3`}, {"smallint", `-32768`}, {"numeric", `12.30`}, {"numeric", `"199.99"`}, {"numeric(5,2)", `1.5`},
		{"real", `0.1`}, {"double precision", `-1e-3`}, {"boolean", `true`}, {"boolean", `false`}, {"date", `"2026-03-29"`},
		{"timestamptz", `"2026-03-29T01:30:00Z"`}, {"timestamptz", `1774747800000`}, {"timestamp", `"2026-03-29 01:30:00.5"`},
		{"timestamp(0)", `1774747800000`}, {"time", `"12:34:56.5"`}, {"uuid", `"6ba7b810-9dad-11d1-80b4-00c04fd430c8"`},
		{"bytea", `"aGVsbG8="`},
	} {
		c := config.Column{Type: tc.typ}
		ct := c.Typ()
		got, ok := plain(ct, []byte(tc.raw))
		want, err := convert(ct, toAny([]byte(tc.raw)))
		if !ok || err != nil || !reflect.DeepEqual(got, want) {
			t.Errorf("%s %s: plain %#v %v, convert %#v %v", tc.typ, tc.raw, got, ok, want, err)
		}
	}
	for _, tc := range []struct{ typ, raw string }{
		{"text", `"a\u0041"`}, {"text", `1`}, {"bigint", `1.0`}, {"bigint", `9223372036854775808`}, {"integer", `2147483648`},
		{"numeric(5,2)", `1.005`}, {"boolean", `"true"`}, {"jsonb", `"x"`}, {"jsonb", `1`}, {"date", `"2026-02-30"`},
		{"varchar(3)", `"abcd"`}, {"timestamptz", `null`}, {"uuid", `{}`},
	} {
		c := config.Column{Type: tc.typ}
		if v, ok := plain(c.Typ(), []byte(tc.raw)); ok {
			t.Errorf("%s %s: plain took it (%#v); it is convert's", tc.typ, tc.raw, v)
		}
	}
}
