package decode

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"

	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
)

// readerSchema is an Avro pipeline's reader schema (avro.reader_subject):
// every record is decoded with its writer schema resolved against it, so
// that a field the writer lacks takes the reader's default and a field
// the reader lacks is dropped, as Avro's schema resolution says.
//
// With version latest, the subject's newest version is fetched at the
// first record, and again when a record comes with a writer schema id
// higher than any seen so far: registry ids grow, so such a writer may
// be a newer version of the subject, whose new fields an older reader
// would drop. Each id triggers one fetch at most.
type readerSchema struct {
	subject string
	version int // -1: latest
	compat  *avro.SchemaCompatibility

	mu sync.Mutex // guards the fields below; no request is made under it
	// cur is the reader schema in use, nil until fetched.
	cur *readerVersion
	// checked is the highest writer id the latest version was fetched
	// for (or the reader's own id): a writer id at most this one does not
	// fetch again.
	checked int
}

// readerVersion is one fetched reader schema and the writer schemas
// resolved against it, by writer id.
type readerVersion struct {
	id, version int
	schema      avroSchema
	// resolved holds, per writer id, the composite schema that decodes the
	// writer's bytes as the reader's record, or the bad-input error that
	// says why it cannot. Guarded by readerSchema.mu.
	resolved map[int]resolution
}

// resolution is a writer schema resolved against a reader schema.
type resolution struct {
	schema avroSchema
	// api decodes schema with a decoder cache of its own. hamba/avro
	// (v2.31.0) keys its decoders by a fingerprint that leaves out what
	// resolution does to each field: v2 read as v1 (a field skipped) and
	// v2 read as v2 (the same field read) share a key when the field has
	// a default, and the first decoder built serves both.
	api avro.API
	err error
}

func newReaderSchema(a *config.Avro) *readerSchema {
	if a == nil || a.ReaderSubject == "" {
		return nil
	}
	return &readerSchema{subject: a.ReaderSubject, version: a.Version(), compat: avro.NewSchemaCompatibility()}
}

// resolve returns the schema that decodes a record written with ws as the
// reader schema. A *BadRecord error means the writer cannot be read as
// the reader (class schema); a *RegistryUnavailableError means the reader
// schema could not be fetched: the record is held back, never
// dead-lettered, whether the registry is out or the subject is missing,
// because a misconfigured subject is not the record's fault.
func (rs *readerSchema) resolve(reg *Registry, ws *writerSchema) (resolution, error) {
	rv, err := rs.current(reg, ws.id)
	if err != nil {
		return resolution{}, err
	}
	rs.mu.Lock()
	res, ok := rv.resolved[ws.id]
	rs.mu.Unlock()
	if !ok {
		res = rs.resolution(rv, ws)
		rs.mu.Lock()
		rv.resolved[ws.id] = res
		rs.mu.Unlock()
	}
	return res, res.err
}

func (rs *readerSchema) resolution(rv *readerVersion, ws *writerSchema) resolution {
	// hamba/avro's Resolve follows a recursive schema (a record that
	// contains itself, a linked list) forever and overflows the stack,
	// which no recover catches.
	for _, s := range []avroSchema{rv.schema, ws.avro} {
		if name := recursive(s); name != "" {
			return resolution{err: bad(record.ClassSchema, "schema id %d cannot be read as reader schema id %d (%s version %d): record %s contains itself, which schema resolution does not support",
				ws.id, rv.id, rs.subject, rv.version, name)}
		}
	}
	s, err := rs.compat.Resolve(rv.schema, ws.avro)
	if err != nil {
		if f := rs.incompatibleField(rv.schema, ws.avro); f != "" {
			err = fmt.Errorf("field %s: %w", f, err)
		}
		return resolution{err: bad(record.ClassSchema, "schema id %d cannot be read as reader schema id %d (%s version %d): %v",
			ws.id, rv.id, rs.subject, rv.version, err)}
	}
	return resolution{schema: s, api: avroConfig.Freeze()}
}

// current returns the reader schema to read writer id with, fetching it
// first when there is none yet or, for latest, when id is newer than any
// checked.
func (rs *readerSchema) current(reg *Registry, id int) (*readerVersion, error) {
	rs.mu.Lock()
	cur, checked := rs.cur, rs.checked
	rs.mu.Unlock()
	if cur != nil && (rs.version != -1 || id <= checked) {
		return cur, nil
	}
	rv, err := reg.readerSchema(rs.subject, rs.version)
	if err != nil {
		return nil, &RegistryUnavailableError{SchemaID: id, Err: err}
	}
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.cur == nil || rs.cur.id != rv.id {
		rs.cur = rv
	}
	rs.checked = max(rs.checked, id, rv.id)
	return rs.cur, nil
}

// readerSchema fetches a subject's version (-1: latest) and parses it as
// an Avro schema, local timestamps rewritten as for writer schemas. It
// keeps to the registry's backoff after an outage.
func (r *Registry) readerSchema(subject string, version int) (*readerVersion, error) {
	what := subject + " version " + strconv.Itoa(version)
	if version == -1 {
		what = subject + " version latest"
	}
	if err := r.quiet(); err != nil {
		return nil, fmt.Errorf("reader schema %s: %w", what, err)
	}
	ss, err := r.cl.SchemaByVersion(context.Background(), subject, version)
	if err != nil {
		var re *sr.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
			// The registry answered: no backoff, but the record waits for
			// the subject (avro.reader_subject names one that is missing).
			r.answered(nil)
			return nil, fmt.Errorf("reader schema %s: not in the schema registry (avro.reader_subject, avro.reader_version): %w", what, err)
		}
		r.answered(err)
		return nil, fmt.Errorf("reader schema %s: %w", what, err)
	}
	if ss.Type != sr.TypeAvro {
		r.answered(nil)
		return nil, fmt.Errorf("reader schema %s (id %d) is a %s schema, not Avro", what, ss.ID, ss.Type)
	}
	refs, err := r.references(ss.References)
	if err != nil {
		var u *RegistryUnavailableError
		if errors.As(err, &u) {
			r.answered(err)
		}
		return nil, fmt.Errorf("reader schema %s (id %d): %w", what, ss.ID, err)
	}
	r.answered(nil)
	texts := make([]string, len(refs))
	for i, ref := range refs {
		texts[i] = ref.schema.Schema
	}
	s, err := parseAvro(ss.Schema.Schema, texts...)
	if err != nil {
		return nil, fmt.Errorf("reader schema %s (id %d): %w", what, ss.ID, err)
	}
	return &readerVersion{id: ss.ID, version: ss.Version, schema: s, resolved: map[int]resolution{}}, nil
}

// recursive returns the full name of a record that contains itself in s,
// or "".
func recursive(s avroSchema) string {
	done := map[string]bool{}
	var walk func(s avroSchema, path map[string]bool) string
	walk = func(s avroSchema, path map[string]bool) string {
		switch x := s.(type) {
		case *avro.RefSchema:
			n := x.Schema().FullName()
			if path[n] {
				return n
			}
			return walk(x.Schema(), path)
		case *avro.RecordSchema:
			n := x.FullName()
			if done[n] {
				return ""
			}
			path[n] = true
			for _, f := range x.Fields() {
				if r := walk(f.Type(), path); r != "" {
					return r
				}
			}
			delete(path, n)
			done[n] = true
		case *avro.UnionSchema:
			for _, t := range x.Types() {
				if r := walk(t, path); r != "" {
					return r
				}
			}
		case *avro.ArraySchema:
			return walk(x.Items(), path)
		case *avro.MapSchema:
			return walk(x.Values(), path)
		}
		return ""
	}
	return walk(s, map[string]bool{})
}

// incompatibleField names, as a dotted path, the field of the reader
// record that the writer record cannot fill (hamba/avro's error names the
// types, not the field), or "".
func (rs *readerSchema) incompatibleField(reader, writer avroSchema) string {
	deref := func(s avroSchema) avroSchema {
		if r, ok := s.(*avro.RefSchema); ok {
			return r.Schema()
		}
		return s
	}
	r, rok := deref(reader).(*avro.RecordSchema)
	w, wok := deref(writer).(*avro.RecordSchema)
	if !rok || !wok {
		return ""
	}
	for _, rf := range r.Fields() {
		i := slices.IndexFunc(w.Fields(), func(wf *avro.Field) bool { return wf.Name() == rf.Name() })
		if i < 0 {
			if !rf.HasDefault() {
				return rf.Name()
			}
			continue
		}
		wf := w.Fields()[i]
		if rs.compat.Compatible(rf.Type(), wf.Type()) != nil {
			if sub := rs.incompatibleField(rf.Type(), wf.Type()); sub != "" {
				return rf.Name() + "." + sub
			}
			return rf.Name()
		}
	}
	return ""
}
