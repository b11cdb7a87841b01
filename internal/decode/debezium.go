package decode

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"unicode/utf8"

	"github.com/idemsink/idemsink/internal/record"
)

// debezium reads a Debezium change event: the row is after for a create
// (c), snapshot read (r) or update (u); a delete (d) removes the key found
// in before (or, without before, in the Kafka key). The version is the
// source position the pipeline names, so that the version guard keeps the
// newest change when a snapshot and the stream overlap.
//
// JSON events may come with or without the schema envelope; with it, the
// Kafka Connect semantic types (dates as days, timestamps as epoch
// integers, decimals as scaled bytes) are read exactly. Avro events come
// through the registry, their types named by connect.name.
func (d *Decoder) debezium(key, value []byte) (message, error) {
	var ev map[string]any
	var id int
	if d.p.Debezium.Encoding == "avro" {
		v, vid, err := d.registryAvro(value)
		if err != nil {
			return message{}, err
		}
		id = vid
		if ev, _ = v.(map[string]any); ev == nil {
			return message{}, bad(record.ClassEvent, "Debezium event is not a record (schema id %d)", id)
		}
	} else {
		// The strict checks of a JSON record (one object, valid text)
		// come first, with their classes.
		if err := checkJSON(value); err != nil {
			return message{}, err
		}
		var err error
		if ev, err = connectJSONValue(value); err != nil {
			return message{}, bad(record.ClassType, "Debezium event: %v", err)
		}
	}
	op, _ := ev["op"].(string)
	m := message{schemaID: id, versioned: true}
	var err error
	if m.version, err = d.sourceVersion(ev["source"]); err != nil && (op == "c" || op == "r" || op == "u" || op == "d") {
		return message{}, withSchemaID(bad(record.ClassEvent, "Debezium event: %v", err), id)
	}
	switch op {
	case "c", "r", "u":
		after, ok := ev["after"].(map[string]any)
		if !ok {
			return message{}, withSchemaID(bad(record.ClassEvent, "Debezium %s event without an after row", op), id)
		}
		m.tree = after
		return m, nil
	case "d":
		if m.op, err = d.deletes("Debezium delete (op d)"); err != nil || m.op == opIgnore {
			return message{op: m.op}, withSchemaID(err, id)
		}
		if before, ok := ev["before"].(map[string]any); ok {
			if m.key, err = json.Marshal(before); err != nil {
				return message{}, bad(record.ClassEvent, "Debezium event: %v", err)
			}
			return m, nil
		}
		if len(key) == 0 {
			return message{}, withSchemaID(bad(record.ClassTombstone, "Debezium delete without before and without a key: nothing says which row to delete"), id)
		}
		k, kid, err := d.keyJSON(key)
		if err != nil {
			return message{}, err
		}
		if kid == 0 {
			// A JSON key may carry the schema envelope too.
			if v, err := connectJSONValue(k); err == nil {
				if k, err = json.Marshal(v); err != nil {
					return message{}, bad(record.ClassEvent, "Debezium key: %v", err)
				}
			}
		}
		m.key = k
		return m, nil
	}
	return message{}, withSchemaID(bad(record.ClassEvent, "Debezium op %q is not applied (only c, r, u and d are)", op), id)
}

// sourceVersion is the pipeline's version from a Debezium source block:
// PostgreSQL's lsn, MySQL's binlog file number and position (and the row
// within the event), or ts_ms.
func (d *Decoder) sourceVersion(src any) (int64, error) {
	s, ok := src.(map[string]any)
	if !ok {
		return 0, fmt.Errorf("no source block")
	}
	num := func(name string) (int64, error) {
		raw, ok := s[name]
		if !ok || raw == nil {
			return 0, fmt.Errorf("source.%s: missing or null", name)
		}
		n, err := toInt(raw, 0, math.MaxInt64)
		if err != nil {
			return 0, fmt.Errorf("source.%s: %v", name, err)
		}
		return n, nil
	}
	switch d.p.Debezium.Version {
	case "lsn":
		return num("lsn")
	case "ts_ms":
		return num("ts_ms")
	}
	file, _ := s["file"].(string)
	i := strings.LastIndexByte(file, '.')
	seq, err := strconv.ParseInt(file[i+1:], 10, 64)
	if i < 0 || err != nil || seq < 0 || seq >= 1<<23 {
		return 0, fmt.Errorf("source.file %q has no binlog sequence number", file)
	}
	pos, err := num("pos")
	if err != nil {
		return 0, err
	}
	if pos >= 1<<32 {
		return 0, fmt.Errorf("source.pos %d is beyond 4 GiB", pos)
	}
	var row int64
	if _, ok := s["row"]; ok {
		if row, err = num("row"); err != nil {
			return 0, err
		}
	}
	// file, then position, then the row within the event: one ordered
	// 63-bit number.
	return seq<<40 | pos<<8 | min(row, 255), nil
}

// connectJSONValue decodes a JSON value that may carry Kafka Connect's
// schema envelope ({"schema": ..., "payload": ...}); with the envelope,
// the payload's semantic types are converted as its schema says.
func connectJSONValue(b []byte) (map[string]any, error) {
	if !utf8.Valid(b) {
		// encoding/json would quietly replace the bad bytes.
		return nil, fmt.Errorf("decode JSON: not valid UTF-8")
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v map[string]any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("decode JSON: %v", err)
	}
	if v == nil {
		return nil, fmt.Errorf("decode JSON: value is not an object")
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, fmt.Errorf("decode JSON: trailing data after the object")
	}
	schema, hasSchema := v["schema"].(map[string]any)
	payload, hasPayload := v["payload"].(map[string]any)
	if !hasSchema || !hasPayload || len(v) != 2 {
		return v, nil
	}
	if err := connectStruct(schema, payload); err != nil {
		return nil, err
	}
	return payload, nil
}

// connectStruct converts, in place, the fields of a struct payload whose
// Connect schema names a semantic type.
func connectStruct(schema, payload map[string]any) error {
	fields, _ := schema["fields"].([]any)
	for _, f := range fields {
		fs, _ := f.(map[string]any)
		name, _ := fs["field"].(string)
		v, ok := payload[name]
		if !ok || v == nil {
			continue
		}
		typeName, _ := fs["name"].(string)
		if sub, ok := v.(map[string]any); ok && typeName == "io.debezium.data.VariableScaleDecimal" {
			j, err := variableScaleDecimal(sub["scale"], sub["value"])
			if err != nil {
				return fmt.Errorf("field %s: %v", name, err)
			}
			payload[name] = j
			continue
		}
		if sub, ok := v.(map[string]any); ok && fs["type"] == "struct" {
			if err := connectStruct(fs, sub); err != nil {
				return err
			}
			continue
		}
		if typeName == "org.apache.kafka.connect.data.Decimal" {
			params, _ := fs["parameters"].(map[string]any)
			j, err := connectDecimal(v, params)
			if err != nil {
				return fmt.Errorf("field %s: %v", name, err)
			}
			payload[name] = j
			continue
		}
		if j, ok, err := connectJSON(typeName, v); err != nil {
			return fmt.Errorf("field %s: %v", name, err)
		} else if ok {
			payload[name] = j
		}
	}
	return nil
}

// connectDecimal reads Connect's Decimal in JSON: the unscaled value as
// base64 big-endian two's complement, the scale in the schema.
func connectDecimal(v any, params map[string]any) (any, error) {
	s, ok := v.(string)
	if !ok {
		return v, nil // decimal.handling.mode string or double: already a number
	}
	scaleText, _ := params["scale"].(string)
	scale, err := strconv.Atoi(scaleText)
	if err != nil || scale < 0 || scale > 1000 {
		return nil, fmt.Errorf("Decimal without a usable scale parameter %q", scaleText)
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("Decimal %q is not base64", s)
	}
	return unscaled(b, scale), nil
}
