package decode

import (
	"bytes"
	"encoding/json"
	"math"
	"math/big"
	"reflect"
	"strings"
	"testing"

	"github.com/idemsink/idemsink/internal/record"
)

// decodeOld is Decode as it was before the scanner: encoding/json into a
// map. FuzzDiff holds the two to the same results.
func (d *Decoder) decodeOld(key, value []byte, pos record.Position) (record.Row, record.Date, error) {
	if err := d.checkSize(key, value); err != nil {
		return record.Row{}, record.Date{}, err
	}
	if value == nil {
		return record.Row{}, record.Date{}, bad(record.ClassTombstone, "the value is null; deletes are dead-lettered (pipeline deletes: dead_letter)")
	}
	// The checks before the scanner are shared; what differs is finding
	// the members.
	if err := checkJSON(value); err != nil {
		return record.Row{}, record.Date{}, err
	}
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	var obj map[string]any
	if err := dec.Decode(&obj); err != nil {
		return record.Row{}, record.Date{}, bad(record.ClassMalformed, "decode JSON: %v", err)
	}
	r := record.Row{Values: make([]any, len(d.cols)), Pos: pos, Size: len(key) + len(value), Key: key, Value: value}
	for i, c := range d.cols {
		raw, ok := lookupOld(obj, c.path)
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
	raw, ok := lookupOld(obj, d.dateFld)
	if !ok || raw == nil {
		return record.Row{}, record.Date{}, bad(record.ClassMissing, "date field %q: missing or null", d.p.Date.Field)
	}
	date, err := targetDate(raw, d.loc)
	if err != nil {
		return record.Row{}, record.Date{}, bad(classOf(err), "date field %q: %v", d.p.Date.Field, err)
	}
	if d.verFld != nil {
		raw, ok := lookupOld(obj, d.verFld)
		if !ok || raw == nil {
			return record.Row{}, record.Date{}, bad(record.ClassMissing, "version field %q: missing or null", d.p.Version.Field)
		}
		if d.verTS {
			t, err := toTime(raw)
			if err != nil {
				return record.Row{}, record.Date{}, bad(classOf(err), "version field %q: %v", d.p.Version.Field, err)
			}
			r.Version = t.UnixMicro()
		} else {
			v, err := toInt(raw, math.MinInt64, math.MaxInt64)
			if err != nil {
				return record.Row{}, record.Date{}, bad(classOf(err), "version field %q: %v", d.p.Version.Field, err)
			}
			r.Version = v
		}
	}
	keyVals := make([]any, len(d.key))
	types := make([]string, len(d.key))
	for i, k := range d.key {
		keyVals[i], types[i] = r.Values[k], d.cols[k].typ
	}
	r.ID = record.RecordID(types, keyVals)
	return r, date, nil
}

func lookupOld(obj map[string]any, path []string) (any, bool) {
	var cur any = obj
	for _, p := range path {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil, false
		}
		if cur, ok = m[p]; !ok {
			return nil, false
		}
	}
	return cur, true
}

func FuzzDiff(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s.value))
	}
	f.Add([]byte(`{"id":1,"id":2,"ts":"2026-03-29","rev":1}`))
	f.Add([]byte(`{"i\u0064":1,"ts":"2026-03-29","rev":1, "address":{"city":"a","city":"b"}}`))
	f.Add([]byte(` {"id":1,"name":"\ud800x","ts":"2026-03-29","rev":1} `))
	decoders := fuzzDecoders(f)
	f.Fuzz(func(t *testing.T, v []byte) {
		for _, d := range decoders {
			r1, d1, e1 := d.decodeOld(nil, v, record.Position{})
			r2, d2, e2 := d.Decode(nil, v, record.Position{})
			if (e1 == nil) != (e2 == nil) || (e1 != nil && e1.Error() != e2.Error()) {
				t.Fatalf("%s: errors differ on %q:\nold %v\nnew %v", d.Pipeline().Name, v, e1, e2)
			}
			if e1 == nil && (!reflect.DeepEqual(r1, r2) || d1 != d2) {
				t.Fatalf("%s: rows differ on %q:\nold %#v\nnew %#v", d.Pipeline().Name, v, r1, r2)
			}
		}
	})
}

func FuzzNumeric(f *testing.F) {
	for _, s := range []string{"0", "-0", "00.00", "12.30", "-1.50", "007", "1.", ".5", "+1", "1e3", "-0.010", "100", "1.000", "-", "0.0001"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		n, ok := plainDecimal(s)
		if !ok {
			return
		}
		// The exact path, as toNumeric did it before the fast path.
		want, err := toNumericExact(s)
		if err != nil || want != n {
			t.Fatalf("%q: fast %q, exact %q (%v)", s, n, want, err)
		}
	})
}
func toNumericExactAny(raw any) (record.Numeric, error) {
	var s string
	switch v := raw.(type) {
	case json.Number:
		s = string(v)
	case string:
		s = v
	default:
		return "", wrongType("%s is not a number", describe(raw))
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

func toNumericExact(s string) (record.Numeric, error) { return toNumericExactAny(s) }
