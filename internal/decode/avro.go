package decode

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"math/big"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/hamba/avro/v2"
)

type avroSchema = avro.Schema

// avroConfig bounds what one untrusted payload may make the decoder
// allocate: a length prefix is read before its bytes are.
var avroConfig = avro.Config{MaxByteSliceSize: 16 << 20, MaxSliceAllocSize: 1 << 20}

var avroAPI = avroConfig.Freeze()

// parseAvro parses a writer schema after the schemas it references, which
// define named types it uses. Each schema gets its own cache: two versions
// of one record name must not share a definition.
func parseAvro(text string, refs ...string) (avroSchema, error) {
	cache := &avro.SchemaCache{}
	for _, ref := range refs {
		if _, err := avro.ParseWithCache(localTimestamps(ref), "", cache); err != nil {
			return nil, fmt.Errorf("parse referenced Avro schema: %w", err)
		}
	}
	s, err := avro.ParseWithCache(localTimestamps(text), "", cache)
	if err != nil {
		return nil, fmt.Errorf("parse Avro schema: %w", err)
	}
	return s, nil
}

// localProp marks a long that was a local-timestamp-millis or -micros in
// the writer schema; its value is the unit.
const localProp = "idemsink.local-timestamp"

// localTimestamps takes the local-timestamp logical types out of a schema
// text, leaving a long marked with localProp. hamba/avro decodes them
// through the host's time zone (time.Unix in time.Local, then shifted by
// the offset, which is wrong around a daylight-saving change); as plain
// longs they are read the same on every host: the wall clock, spelled in
// UTC. A text that does not parse is returned as it is, for the parser to
// refuse.
func localTimestamps(text string) string {
	if !strings.Contains(text, "local-timestamp-") {
		return text
	}
	var v any
	if json.Unmarshal([]byte(text), &v) != nil {
		return text
	}
	var walk func(any)
	walk = func(v any) {
		switch x := v.(type) {
		case map[string]any:
			if lt, _ := x["logicalType"].(string); x["type"] == "long" && (lt == "local-timestamp-millis" || lt == "local-timestamp-micros") {
				delete(x, "logicalType")
				x[localProp] = strings.TrimPrefix(lt, "local-timestamp-")
			}
			for _, e := range x {
				walk(e)
			}
		case []any:
			for _, e := range x {
				walk(e)
			}
		}
	}
	walk(v)
	b, err := json.Marshal(v)
	if err != nil {
		return text
	}
	return string(b)
}

// decodeAvro decodes an Avro binary payload written with s and returns it
// as JSON, so that the typed column conversion sees exactly what it sees
// for a JSON record. Logical types are spelled so that conversion keeps
// them exact: a decimal as a decimal number with its scale, a date as
// YYYY-MM-DD, a timestamp as RFC 3339 with its microseconds, a uuid as its
// string.
func decodeAvro(s avroSchema, payload []byte) ([]byte, error) {
	j, err := avroValue(s, payload)
	if err != nil {
		return nil, err
	}
	b, err := json.Marshal(j)
	if err != nil {
		return nil, fmt.Errorf("decode Avro: %w", err)
	}
	return b, nil
}

// avroValue decodes an Avro binary payload into JSON values.
func avroValue(s avroSchema, payload []byte) (any, error) {
	return avroValueWith(avroAPI, s, payload)
}

// avroValueWith decodes with api, whose decoder cache is keyed by schema
// fingerprints (a resolved schema needs a cache of its own: see
// resolution).
func avroValueWith(api avro.API, s avroSchema, payload []byte) (any, error) {
	// A Reader, not Unmarshal: Unmarshal takes a payload that ends early
	// (io.EOF) for a whole one, and says nothing of bytes left over.
	r := avro.NewReader(nil, 0, avro.WithReaderConfig(api)).Reset(payload)
	var v any
	r.ReadVal(s, &v)
	switch {
	case errors.Is(r.Error, io.EOF) || errors.Is(r.Error, io.ErrUnexpectedEOF):
		return nil, fmt.Errorf("decode Avro: the payload ends inside the record")
	case r.Error != nil:
		return nil, fmt.Errorf("decode Avro: %w", r.Error)
	}
	if r.Peek(); r.Error == nil {
		return nil, fmt.Errorf("decode Avro: bytes after the record (trailing data)")
	}
	return avroJSON(s, v)
}

// avroJSON walks a generically decoded Avro value beside its schema.
func avroJSON(s avro.Schema, v any) (any, error) {
	if v == nil {
		return nil, nil
	}
	switch s := s.(type) {
	case *avro.RefSchema:
		return avroJSON(s.Schema(), v)
	case *avro.RecordSchema:
		m, ok := v.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("decode Avro: record %s decoded as %T", s.FullName(), v)
		}
		if s.FullName() == "io.debezium.data.VariableScaleDecimal" {
			return variableScaleDecimal(m["scale"], m["value"])
		}
		out := make(map[string]any, len(m))
		for _, f := range s.Fields() {
			e, ok := m[f.Name()]
			if !ok {
				// A writer's field that the reader schema does not have:
				// schema resolution skipped its bytes and drops it.
				continue
			}
			j, err := avroJSON(f.Type(), e)
			if err != nil {
				return nil, fmt.Errorf("field %s: %w", f.Name(), err)
			}
			out[f.Name()] = j
		}
		return out, nil
	case *avro.UnionSchema:
		// A named type in a union decodes wrapped in its full name.
		if m, ok := v.(map[string]any); ok && len(m) == 1 {
			for _, t := range s.Types() {
				if r, ok := t.(*avro.RefSchema); ok {
					t = r.Schema()
				}
				if n, ok := t.(avro.NamedSchema); ok {
					if inner, ok := m[n.FullName()]; ok {
						return avroJSON(t, inner)
					}
				}
			}
		}
		var branch avro.Schema
		for _, t := range s.Types() {
			if t.Type() != avro.Null {
				if branch != nil {
					return genericJSON(v) // several branches: go by the value
				}
				branch = t
			}
		}
		if branch == nil {
			return nil, nil
		}
		return avroJSON(branch, v)
	case *avro.ArraySchema:
		a, ok := v.([]any)
		if !ok {
			return genericJSON(v)
		}
		out := make([]any, len(a))
		for i, e := range a {
			j, err := avroJSON(s.Items(), e)
			if err != nil {
				return nil, err
			}
			out[i] = j
		}
		return out, nil
	case *avro.MapSchema:
		m, ok := v.(map[string]any)
		if !ok {
			return genericJSON(v)
		}
		out := make(map[string]any, len(m))
		for k, e := range m {
			if !utf8.ValidString(k) {
				return nil, badText("map key %s is not valid UTF-8", quoteValue(k))
			}
			j, err := avroJSON(s.Values(), e)
			if err != nil {
				return nil, err
			}
			out[k] = j
		}
		return out, nil
	}
	var props map[string]any
	if p, ok := s.(interface{ Props() map[string]any }); ok {
		props = p.Props()
	}
	if unit, _ := props[localProp].(string); unit != "" {
		if n, ok := v.(int64); ok {
			t := time.UnixMilli(n)
			if unit == "micros" {
				t = time.UnixMicro(n)
			}
			return t.UTC().Format(time.RFC3339Nano), nil
		}
	}
	if name, _ := props["connect.name"].(string); name != "" {
		if j, ok, err := connectJSON(name, v); ok || err != nil {
			return j, err
		}
	}
	switch x := v.(type) {
	case *big.Rat:
		scale := 0
		if l, ok := s.(interface{ Logical() avro.LogicalSchema }); ok {
			if d, ok := l.Logical().(*avro.DecimalLogicalSchema); ok {
				scale = d.Scale()
			}
		}
		return json.Number(x.FloatString(scale)), nil
	case time.Time:
		if l, ok := s.(interface{ Logical() avro.LogicalSchema }); ok && l.Logical() != nil && l.Logical().Type() == avro.Date {
			return x.UTC().Format(time.DateOnly), nil
		}
		return x.UTC().Format(time.RFC3339Nano), nil
	}
	return genericJSON(v)
}

// genericJSON spells a decoded scalar, or a structure without a schema to
// walk, the way encoding/json with UseNumber would have decoded it.
func genericJSON(v any) (any, error) {
	switch x := v.(type) {
	case nil, bool:
		return x, nil
	case string:
		if !utf8.ValidString(x) {
			return nil, badText("string %s is not valid UTF-8", quoteValue(x))
		}
		return x, nil
	case int:
		return json.Number(strconv.Itoa(x)), nil
	case int32:
		return json.Number(strconv.FormatInt(int64(x), 10)), nil
	case int64:
		return json.Number(strconv.FormatInt(x, 10)), nil
	case float32:
		return floatJSON(float64(x), 32)
	case float64:
		return floatJSON(x, 64)
	case []byte:
		return base64.StdEncoding.EncodeToString(x), nil
	case *big.Rat:
		return json.Number(x.RatString()), nil
	case time.Time:
		return x.UTC().Format(time.RFC3339Nano), nil
	case time.Duration:
		return json.Number(strconv.FormatInt(x.Microseconds(), 10)), nil
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			if !utf8.ValidString(k) {
				return nil, badText("map key %s is not valid UTF-8", quoteValue(k))
			}
			j, err := genericJSON(e)
			if err != nil {
				return nil, err
			}
			out[k] = j
		}
		return out, nil
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			j, err := genericJSON(e)
			if err != nil {
				return nil, err
			}
			out[i] = j
		}
		return out, nil
	}
	return nil, fmt.Errorf("unsupported Avro value %T", v)
}

func floatJSON(f float64, bits int) (any, error) {
	if math.IsNaN(f) || math.IsInf(f, 0) {
		return nil, outOfRange("%v has no JSON or PostgreSQL numeric form", f)
	}
	return json.Number(strconv.FormatFloat(f, 'g', -1, bits)), nil
}

// connectJSON converts the Kafka Connect and Debezium semantic types that
// ride on plain integers (days, epoch milli-, micro-, nanoseconds) into the
// spellings the column conversion reads. ok is false for any other name.
func connectJSON(name string, v any) (j any, ok bool, err error) {
	if s, isString := v.(string); isString && name == "io.debezium.data.Json" {
		return jsonText(s), true, nil
	}
	switch name {
	case "io.debezium.time.Time", "org.apache.kafka.connect.data.Time", "io.debezium.time.MicroTime", "io.debezium.time.NanoTime",
		"io.debezium.time.Date", "org.apache.kafka.connect.data.Date", "io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp",
		"io.debezium.time.MicroTimestamp", "io.debezium.time.NanoTimestamp":
	default:
		return nil, false, nil
	}
	var n int64
	switch x := v.(type) {
	case int:
		n = int64(x)
	case int32:
		n = int64(x)
	case int64:
		n = x
	case json.Number:
		n, err = x.Int64()
		if err != nil {
			return nil, true, fmt.Errorf("%s: %s is not an integer", name, x)
		}
	default:
		return nil, false, nil
	}
	switch name {
	case "io.debezium.time.Time", "org.apache.kafka.connect.data.Time":
		return timeOfDay(name, n, 1000)
	case "io.debezium.time.MicroTime":
		return timeOfDay(name, n, 1)
	case "io.debezium.time.NanoTime":
		if n < 0 {
			return nil, true, fmt.Errorf("%s: %d is not a time of day", name, n)
		}
		// PostgreSQL's time keeps microseconds, as for timestamps.
		return timeOfDay(name, n/1000, 1)
	case "io.debezium.time.Date", "org.apache.kafka.connect.data.Date":
		return time.Unix(n*86400, 0).UTC().Format(time.DateOnly), true, nil
	case "io.debezium.time.Timestamp", "org.apache.kafka.connect.data.Timestamp":
		return time.UnixMilli(n).UTC().Format(time.RFC3339Nano), true, nil
	case "io.debezium.time.MicroTimestamp":
		return time.UnixMicro(n).UTC().Format(time.RFC3339Nano), true, nil
	case "io.debezium.time.NanoTimestamp":
		return time.Unix(0, n).UTC().Format(time.RFC3339Nano), true, nil
	}
	return nil, false, nil
}

// timeOfDay spells n units of unit microseconds since midnight as a time
// of day.
func timeOfDay(name string, n, unit int64) (any, bool, error) {
	if n < 0 || n > 86_400_000_000/unit {
		return nil, true, fmt.Errorf("%s: %d is not a time of day", name, n)
	}
	return formatTimeOfDay(n * unit), true, nil
}

// variableScaleDecimal reads Debezium's VariableScaleDecimal, a struct of
// the scale and the unscaled value's big-endian two's complement bytes
// (base64 in JSON).
func variableScaleDecimal(scale, value any) (any, error) {
	var sc int64
	switch x := scale.(type) {
	case json.Number:
		n, err := x.Int64()
		if err != nil {
			return nil, fmt.Errorf("VariableScaleDecimal scale %s is not an integer", x)
		}
		sc = n
	case int32:
		sc = int64(x)
	case int:
		sc = int64(x)
	case int64:
		sc = x
	default:
		return nil, fmt.Errorf("VariableScaleDecimal without a scale")
	}
	var b []byte
	switch x := value.(type) {
	case string:
		var err error
		if b, err = base64.StdEncoding.DecodeString(x); err != nil {
			return nil, fmt.Errorf("VariableScaleDecimal value %q is not base64", x)
		}
	case []byte:
		b = x
	default:
		return nil, fmt.Errorf("VariableScaleDecimal without a value")
	}
	if sc < 0 || sc > 1000 {
		return nil, fmt.Errorf("VariableScaleDecimal scale %d is out of range", sc)
	}
	return unscaled(b, int(sc)), nil
}

// unscaled is the decimal of big-endian two's complement bytes at scale.
func unscaled(b []byte, scale int) json.Number {
	n := new(big.Int).SetBytes(b)
	if len(b) > 0 && b[0]&0x80 != 0 {
		n.Sub(n, new(big.Int).Lsh(big.NewInt(1), uint(8*len(b))))
	}
	r := new(big.Rat).SetFrac(n, new(big.Int).Exp(big.NewInt(10), big.NewInt(int64(scale)), nil))
	return json.Number(r.FloatString(scale))
}
