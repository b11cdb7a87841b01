package decode

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/retry"
)

// RegistryUnavailableError means the Schema Registry could not say what a
// schema id is: it did not answer, answered with a server error, or refused
// idemsink's credentials. It is an outage, not bad input: the record must
// not be dead-lettered; the consumer pauses, waits and decodes it again,
// as it does when PostgreSQL is down. Test for it with errors.As or
// Unavailable.
type RegistryUnavailableError struct {
	SchemaID int
	Err      error
}

func (e *RegistryUnavailableError) Error() string {
	return fmt.Sprintf("schema registry unavailable for schema id %d: %v", e.SchemaID, e.Err)
}

func (e *RegistryUnavailableError) Unwrap() error { return e.Err }

// Unavailable reports whether err is a Schema Registry outage: retry the
// record later, never dead-letter it.
func Unavailable(err error) bool {
	var u *RegistryUnavailableError
	return errors.As(err, &u)
}

// Registry fetches writer schemas by id and keeps them: a schema id names
// one schema forever, so nothing is ever refetched. An id the registry does
// not know (404) is bad input, but only for now: a lagging replica may
// learn it a moment later, so the 404 is kept for the backoff's base and
// the registry is asked again after it, for the life of the process.
//
// A registry found out is not asked again until a backoff is over: until
// then a schema not kept fails at once as unavailable. A registry that
// hangs so costs one request timeout per backoff, not one per record.
type Registry struct {
	cl *sr.Client

	mu      sync.Mutex
	schemas map[int]*writerSchema
	// unknown holds the 404s, each until it may be asked again.
	unknown map[int]unknownID
	now     func() time.Time
	// The backoff after an outage: base, doubling with each outage in a
	// row up to limit; outages counts them, and the registry is not asked
	// again before quietUntil, the end of the last outage's backoff.
	base, limit time.Duration
	outages     int
	quietUntil  time.Time
	lastErr     error
}

// writerSchema is a registry schema, parsed once for its format.
type writerSchema struct {
	id   int
	typ  sr.SchemaType
	err  error // the registry does not know the id, or the schema does not parse
	avro avroSchema
	pb   protoFile
}

// NewRegistry returns a client for the configured registry; it connects
// nothing until a schema is needed.
func NewRegistry(c *config.SchemaRegistry) (*Registry, error) {
	opts := []sr.ClientOpt{sr.URLs(c.URL), sr.UserAgent("idemsink")}
	if c.User != "" {
		opts = append(opts, sr.BasicAuth(c.User, c.Password))
	}
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = config.DefaultRegistryTimeout
	}
	httpcl := &http.Client{Timeout: timeout}
	if c.CAFile != "" {
		pem, err := os.ReadFile(c.CAFile)
		if err != nil {
			return nil, fmt.Errorf("schema registry CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("schema registry CA file %s: no PEM certificates", c.CAFile)
		}
		httpcl.Transport = &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}
	}
	opts = append(opts, sr.HTTPClient(httpcl))
	cl, err := sr.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("schema registry client: %w", err)
	}
	return &Registry{cl: cl, schemas: map[int]*writerSchema{}, unknown: map[int]unknownID{}, now: time.Now,
		base: config.DefaultRetryBackoff, limit: config.DefaultRetryBackoffMax}, nil
}

// unknownID is a 404 for a schema id, kept until it may be asked again.
type unknownID struct {
	err   error
	until time.Time
}

// setBackoff sets the wait after an outage before the registry is asked
// again: base, doubling with each outage in a row up to limit.
func (r *Registry) setBackoff(base, limit time.Duration) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.base, r.limit = base, max(base, limit)
}

// quiet returns the last outage's error while its backoff lasts.
func (r *Registry) quiet() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.outages > 0 && r.now().Before(r.quietUntil) {
		return fmt.Errorf("not asked again until %s after: %w", r.quietUntil.Format(time.RFC3339Nano), r.lastErr)
	}
	return nil
}

// answered records the outcome of asking the registry: err is nil when it
// answered (a schema, a 404), else the outage, which starts a backoff.
func (r *Registry) answered(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err == nil {
		r.outages = 0
		return
	}
	r.outages++
	r.lastErr = err
	r.quietUntil = r.now().Add(retry.Backoff{Base: r.base, Limit: r.limit}.After(r.outages))
}

// schema returns the parsed schema with the id. A *BadRecord error means
// the id is unknown or its schema unusable; a *RegistryUnavailableError
// means try again later.
func (r *Registry) schema(id int) (*writerSchema, error) {
	r.mu.Lock()
	ws := r.schemas[id]
	u, isUnknown := r.unknown[id]
	r.mu.Unlock()
	if ws != nil {
		return ws, ws.err
	}
	if isUnknown && r.now().Before(u.until) {
		return nil, u.err
	}
	if err := r.quiet(); err != nil {
		return nil, &RegistryUnavailableError{SchemaID: id, Err: err}
	}
	// The http.Client's timeout bounds the request; Decode has no context.
	s, err := r.cl.SchemaByID(context.Background(), id)
	if err != nil {
		var re *sr.ResponseError
		if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
			r.answered(nil)
			err := bad(record.ClassSchema, "schema id %d: unknown to the schema registry (%v)", id, err)
			r.mu.Lock()
			r.unknown[id] = unknownID{err: err, until: r.now().Add(r.base)}
			r.mu.Unlock()
			return nil, err
		} else {
			r.answered(err)
			return nil, &RegistryUnavailableError{SchemaID: id, Err: err}
		}
	} else {
		ws, err = r.parse(id, s)
		if err != nil {
			var u *RegistryUnavailableError
			if errors.As(err, &u) {
				r.answered(err)
				return nil, err
			}
			ws = &writerSchema{id: id, err: bad(record.ClassSchema, "schema id %d: %v", id, err)}
		}
	}
	r.answered(nil)
	r.mu.Lock()
	r.schemas[id] = ws
	delete(r.unknown, id)
	r.mu.Unlock()
	return ws, ws.err
}

func (r *Registry) parse(id int, s sr.Schema) (*writerSchema, error) {
	ws := &writerSchema{id: id, typ: s.Type}
	var err error
	switch s.Type {
	case sr.TypeAvro:
		var refs []reference
		if refs, err = r.references(s.References); err == nil {
			texts := make([]string, len(refs))
			for i, ref := range refs {
				texts[i] = ref.schema.Schema
			}
			ws.avro, err = parseAvro(s.Schema, texts...)
		}
	case sr.TypeProtobuf:
		ws.pb, err = r.parseProto(id, s)
	case sr.TypeJSON:
	default:
		err = fmt.Errorf("unsupported schema type %s", s.Type)
	}
	if err != nil {
		return nil, err
	}
	return ws, nil
}

// frame splits a Confluent wire-format message: magic byte 0, a big-endian
// 4-byte schema id, then the payload.
func frame(b []byte) (int, []byte, error) {
	var h sr.ConfluentHeader
	id, rest, err := h.DecodeID(b)
	if err != nil {
		if len(b) == 0 {
			return 0, nil, bad(record.ClassPayload, "Confluent wire format: empty value")
		}
		return 0, nil, bad(record.ClassPayload, "Confluent wire format: no magic byte 0 and 4-byte schema id (%d bytes, first 0x%02x)", len(b), b[0])
	}
	return id, rest, nil
}

// reference is a schema another schema refers to, by the name it uses.
type reference struct {
	name   string
	schema sr.Schema
}

// references fetches the schemas that refs name (Protobuf imports, Avro
// named types defined in other subjects), by subject and version, each
// after the schemas it refers to itself.
func (r *Registry) references(refs []sr.SchemaReference) ([]reference, error) {
	var out []reference
	seen := map[string]bool{}
	var walk func(refs []sr.SchemaReference, depth int) error
	walk = func(refs []sr.SchemaReference, depth int) error {
		if depth > 16 {
			return fmt.Errorf("schema references nest deeper than 16")
		}
		for _, ref := range refs {
			if seen[ref.Name] {
				continue
			}
			seen[ref.Name] = true
			ss, err := r.cl.SchemaByVersion(context.Background(), ref.Subject, ref.Version)
			if err != nil {
				var re *sr.ResponseError
				if errors.As(err, &re) && re.StatusCode == http.StatusNotFound {
					return fmt.Errorf("reference %s (%s version %d): %w", ref.Name, ref.Subject, ref.Version, err)
				}
				return &RegistryUnavailableError{Err: err}
			}
			if err := walk(ss.References, depth+1); err != nil {
				return err
			}
			out = append(out, reference{name: ref.Name, schema: ss.Schema})
		}
		return nil
	}
	return out, walk(refs, 0)
}
