package decode

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// What a record asks of its target table.
type op uint8

const (
	opUpsert op = iota
	opDelete
	opIgnore // changes nothing: a tombstone under deletes: ignore, Debezium's tombstone after a delete
)

// message is a record with its format taken off: the row as a JSON object,
// whichever format carried it, so that every format shares one typed
// column conversion and one record_id encoding.
type message struct {
	op op
	// row is, for opUpsert, the row as a JSON object; tree is the row
	// already decoded (Avro, Debezium), as encoding/json would decode it
	// with UseNumber.
	row  []byte
	tree map[string]any
	// key is, for opDelete, the JSON the key columns are read from: a JSON
	// object with the columns' fields, or the bare value of a single key
	// column.
	key []byte
	// version, when versioned, is the format's own order (a Debezium
	// source position) instead of a version field.
	version   int64
	versioned bool
	schemaID  int // 0: not from the registry
}

// formats holds what a decoder needs beyond JSON: the registry client,
// made on first use.
type formats struct {
	p       *config.Pipeline
	once    sync.Once
	reg     *Registry
	regErr  error
	regConf *config.SchemaRegistry
	// backoff is the registry's wait after an outage (base, limit); zero:
	// the defaults.
	backoff [2]time.Duration
	// reader is the Avro reader schema values are resolved against; nil:
	// each value is read with its writer schema alone.
	reader *readerSchema
}

func newFormats(p *config.Pipeline) *formats {
	return &formats{p: p, regConf: p.Registry(), reader: newReaderSchema(p.Avro)}
}

func (f *formats) registry() (*Registry, error) {
	f.once.Do(func() {
		if f.regConf == nil {
			f.regErr = errors.New("no schema_registry configured")
			return
		}
		f.reg, f.regErr = NewRegistry(f.regConf)
		if f.reg != nil && f.backoff[0] > 0 {
			f.reg.setBackoff(f.backoff[0], f.backoff[1])
		}
	})
	if f.regErr != nil {
		return nil, &RegistryUnavailableError{Err: f.regErr}
	}
	return f.reg, nil
}

// SetRegistryBackoff sets how long the Schema Registry is left alone after
// it was found out: base, doubling with each outage in a row up to limit.
// Meanwhile a record whose writer schema is not kept yet fails at once as
// unavailable. Call it before the first Decode.
func (d *Decoder) SetRegistryBackoff(base, limit time.Duration) {
	d.f.backoff = [2]time.Duration{base, limit}
}

// Decode turns a Kafka record into a row and its target date. A *BadRecord
// error means the record is bad input and must be dead-lettered; a
// *RegistryUnavailableError (see Unavailable) means the Schema Registry is
// out and the record must be decoded again later, never dead-lettered.
//
// A row with Delete set removes its key (the target date is zero: a delete
// names a key, not a day); a row with Ignore set changes nothing but still
// counts as taken from Kafka.
func (d *Decoder) Decode(key, value []byte, pos record.Position) (record.Row, record.Date, error) {
	if err := d.checkSize(key, value); err != nil {
		return record.Row{}, record.Date{}, err
	}
	m, err := d.unwrap(key, value)
	if err != nil {
		return record.Row{}, record.Date{}, err
	}
	switch m.op {
	case opIgnore:
		return record.Row{Ignore: true, Pos: pos, Size: len(key) + len(value), Key: key, Value: value}, record.Date{}, nil
	case opDelete:
		r, err := d.deleteRow(m, key, value, pos)
		return r, record.Date{}, withSchemaID(err, m.schemaID)
	}
	var obj fields = tree(m.tree)
	if m.tree == nil {
		o, err := d.scan(m.row)
		if err != nil {
			return record.Row{}, record.Date{}, withSchemaID(err, m.schemaID)
		}
		obj = o
	}
	r, date, err := d.decodeRow(key, value, obj, pos)
	if err != nil {
		return record.Row{}, record.Date{}, withSchemaID(err, m.schemaID)
	}
	if m.versioned {
		r.Version = m.version
	}
	return r, date, nil
}

// withSchemaID names the writer schema in a dead letter's reason: a field
// missing from one schema version is a different problem from a field
// missing from one record.
func withSchemaID(err error, id int) error {
	var b *record.BadRecord
	if id == 0 || !errors.As(err, &b) {
		return err
	}
	return &record.BadRecord{Class: b.Class, Reason: fmt.Sprintf("%s (schema id %d)", b.Reason, id)}
}

// within puts a bad record's reason in context, keeping its class first:
// format has one %s, for the reason without its class.
func within(err error, format string) error {
	var b *record.BadRecord
	if !errors.As(err, &b) {
		return err
	}
	return bad(b.Class, format, strings.TrimPrefix(b.Reason, b.Class+": "))
}

// payloadClass is the class of an Avro or Protobuf payload that does not
// decode: the value's own class when one value is at fault (text that is
// not UTF-8, a float with no numeric form), else malformed-payload.
func payloadClass(err error) string {
	var ve *valueError
	switch {
	case errors.As(err, &ve):
		return ve.class
	case strings.Contains(err.Error(), "invalid UTF-8"): // Protobuf's check of string fields
		return record.ClassText
	}
	return record.ClassPayload
}

// unwrap takes the pipeline's format off a record.
func (d *Decoder) unwrap(key, value []byte) (message, error) {
	p := d.p
	if p.Format == "debezium" {
		if value == nil {
			// Debezium follows each delete with a tombstone for log
			// compaction; the delete event did the work.
			return message{op: opIgnore}, nil
		}
		return d.debezium(key, value)
	}
	if value == nil {
		return d.tombstone(key, "the value is null")
	}
	if p.Format == "json" {
		return message{row: value}, nil
	}
	if p.Format == "avro" {
		v, id, err := d.registryAvro(value)
		if err != nil {
			return message{schemaID: id}, err
		}
		t, ok := v.(map[string]any)
		if !ok {
			return message{}, bad(record.ClassNotObject, "expected an Avro record, got another type (schema id %d)", id)
		}
		return message{tree: t, schemaID: id}, nil
	}
	row, id, err := d.registryJSON(p.Format, value)
	return message{row: row, schemaID: id}, err
}

// fields is a decoded row: lookup returns the value at a path as
// encoding/json with UseNumber would have decoded it.
type fields interface {
	lookup(path []string) (any, bool)
}

// tree is a row decoded to JSON values without being spelled as JSON.
type tree map[string]any

func (t tree) lookup(path []string) (any, bool) {
	var v any = map[string]any(t)
	for _, p := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[p]; !ok {
			return nil, false
		}
	}
	return v, true
}

// tombstone applies the pipeline's deletes policy to a record that says
// "delete this key".
func (d *Decoder) tombstone(key []byte, what string) (message, error) {
	o, err := d.deletes(what)
	if err != nil || o == opIgnore {
		return message{op: o}, err
	}
	if len(key) == 0 {
		return message{}, bad(record.ClassTombstone, "%s and there is no key: nothing says which row to delete", what)
	}
	k, id, err := d.keyJSON(key)
	if err != nil {
		return message{}, err
	}
	return message{op: opDelete, key: k, schemaID: id}, nil
}

// deletes is the pipeline's deletes policy for a delete.
func (d *Decoder) deletes(what string) (op, error) {
	switch d.p.Deletes {
	case "ignore":
		return opIgnore, nil
	case "apply":
		return opDelete, nil
	}
	return 0, bad(record.ClassTombstone, "%s; deletes are dead-lettered (pipeline deletes: dead_letter)", what)
}

// keyJSON decodes a Kafka key by the pipeline's key format.
func (d *Decoder) keyJSON(key []byte) ([]byte, int, error) {
	if d.p.KeyFormat == "json" {
		return key, 0, nil
	}
	k, id, err := d.registryJSON(d.p.KeyFormat, key)
	if err != nil {
		return nil, id, within(err, "key: %s")
	}
	return k, id, nil
}

// registryAvro decodes a Confluent wire-format Avro message to JSON values.
func (d *Decoder) registryAvro(b []byte) (any, int, error) {
	ws, payload, id, err := d.framed("avro", b)
	if err != nil {
		return nil, id, err
	}
	s, api := ws.avro, avroAPI
	if d.f.reader != nil {
		reg, err := d.f.registry() // framed has made it
		if err != nil {
			return nil, id, err
		}
		res, err := d.f.reader.resolve(reg, ws)
		if err != nil {
			return nil, id, err
		}
		s, api = res.schema, res.api
	}
	v, err := avroValueWith(api, s, payload)
	if err != nil {
		return nil, id, bad(payloadClass(err), "%v (schema id %d)", err, id)
	}
	return v, id, nil
}

// registryJSON decodes a Confluent wire-format message of the given format
// to JSON.
func (d *Decoder) registryJSON(format string, b []byte) ([]byte, int, error) {
	ws, payload, id, err := d.framed(format, b)
	if err != nil {
		return nil, id, err
	}
	out := payload
	switch ws.typ {
	case sr.TypeAvro:
		out, err = decodeAvro(ws.avro, payload)
	case sr.TypeProtobuf:
		out, err = decodeProto(ws.pb, payload)
	}
	if err != nil {
		return nil, id, bad(payloadClass(err), "%v (schema id %d)", err, id)
	}
	return out, id, nil
}

// framed takes the Confluent header off b and returns the writer schema,
// which must be of the format's type, and the payload.
func (d *Decoder) framed(format string, b []byte) (*writerSchema, []byte, int, error) {
	id, payload, err := frame(b)
	if err != nil {
		return nil, nil, 0, err
	}
	ws, err := d.writer(id)
	if err != nil {
		return nil, nil, id, err
	}
	if ws.typ != formatType(format) {
		return nil, nil, id, bad(record.ClassSchema, "schema id %d is a %s schema, but the pipeline reads %s", id, ws.typ, format)
	}
	return ws, payload, id, nil
}

func (d *Decoder) writer(id int) (*writerSchema, error) {
	reg, err := d.f.registry()
	if err != nil {
		return nil, err
	}
	return reg.schema(id)
}

func formatType(format string) sr.SchemaType {
	switch format {
	case "avro":
		return sr.TypeAvro
	case "protobuf":
		return sr.TypeProtobuf
	}
	return sr.TypeJSON
}

// deleteRow keys a delete: the key columns' fields are read from the key
// JSON as they are from a row, so a delete and the row it removes get the
// same record_id.
func (d *Decoder) deleteRow(m message, key, value []byte, pos record.Position) (record.Row, error) {
	r := record.Row{Delete: true, Pos: pos, Size: len(key) + len(value), Key: key, Value: value, Version: m.version}
	vals := make([]any, len(d.key))
	src := bytes.TrimSpace(m.key)
	if len(src) > 0 && src[0] == '{' {
		obj, err := d.scan(src)
		if err != nil {
			return record.Row{}, within(err, "delete key: %s")
		}
		for j, k := range d.key {
			c := d.cols[k]
			if raw := obj.raw(c.top, c.path); raw != nil {
				if v, ok := plain(c.ct, raw); ok { // convert's value, without toAny
					vals[j] = v
					continue
				}
			}
			raw, ok := obj.lookup(c.path)
			if !ok || raw == nil {
				return record.Row{}, bad(record.ClassMissing, "delete key: field %q (column %s): missing or null", c.fieldName(), c.name)
			}
			if vals[j], err = convert(c.ct, raw); err != nil {
				return record.Row{}, bad(classOf(err), "delete key: field %q (column %s %s): %v", c.fieldName(), c.name, c.ct, err)
			}
		}
		if d.verFld != nil && !m.versioned {
			if r.Version, err = d.version(obj); err != nil {
				return record.Row{}, within(err, "delete key: %s; a pipeline with a version field needs it in a tombstone's key to order the delete")
			}
		}
	} else {
		switch {
		case !json.Valid(src):
			return record.Row{}, bad(record.ClassMalformed, "delete key %s is not a JSON object with the key fields", quoteValue(string(src)))
		case len(d.key) != 1:
			return record.Row{}, bad(record.ClassNotObject, "delete key %s is not a JSON object with the key fields", quoteValue(string(src)))
		case !utf8.Valid(src) || loneSurrogate(src) >= 0:
			return record.Row{}, bad(record.ClassText, "delete key %s is not valid UTF-8 or holds a lone UTF-16 surrogate", quoteValue(string(src)))
		case d.verFld != nil && !m.versioned:
			return record.Row{}, bad(record.ClassMissing, "delete key %s: a pipeline with a version field needs it in a tombstone's key to order the delete", quoteValue(string(src)))
		}
		c := d.cols[d.key[0]]
		v, err := convert(c.ct, toAny(src))
		if err != nil {
			return record.Row{}, bad(classOf(err), "delete key (column %s %s): %v", c.name, c.ct, err)
		}
		vals[0] = v
	}
	r.ID = record.RecordID(d.keyTypes, vals)
	return r, nil
}

func (c column) fieldName() string { return strings.Join(c.path, ".") }
