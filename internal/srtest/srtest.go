// Package srtest is the Schema Registry of the tests: franz-go's srfake, an
// in-process registry that speaks the Confluent REST API over real HTTP,
// with helpers that register schemas and frame values in the Confluent
// wire format. Production code never imports it.
package srtest

import (
	"context"
	"net/http"
	"testing"

	"github.com/bufbuild/protocompile"
	"github.com/hamba/avro/v2"
	"github.com/twmb/franz-go/pkg/sr"
	"github.com/twmb/franz-go/pkg/sr/srfake"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/dynamicpb"
)

// Registry is a running test registry.
type Registry struct {
	*srfake.Registry
	t testing.TB
}

// New starts a registry that accepts any schema change (compatibility
// NONE: the tests evolve schemas on purpose) and stops it when the test
// ends.
func New(t testing.TB) *Registry {
	t.Helper()
	r := srfake.New(srfake.WithGlobalCompat(sr.CompatNone))
	t.Cleanup(r.Close)
	return &Registry{Registry: r, t: t}
}

// Register registers a schema under subject and returns its id.
func (r *Registry) Register(subject string, typ sr.SchemaType, schema string, refs ...sr.SchemaReference) int {
	r.t.Helper()
	id, _, err := r.RegisterSchema(subject, sr.Schema{Schema: schema, Type: typ, References: refs})
	if err != nil {
		r.t.Fatalf("register %s: %v", subject, err)
	}
	return id
}

// Frame prefixes payload with the Confluent header: magic byte 0, the
// schema id and, for Protobuf, the message index.
func Frame(id int, index []int, payload []byte) []byte {
	var h sr.ConfluentHeader
	b, _ := h.AppendEncode(nil, id, index) // never fails
	return append(b, payload...)
}

// Avro registers schema under subject and returns v encoded with it, framed.
func (r *Registry) Avro(subject, schema string, v any) []byte {
	r.t.Helper()
	id := r.Register(subject, sr.TypeAvro, schema)
	s, err := avro.Parse(schema)
	if err != nil {
		r.t.Fatalf("parse Avro schema: %v", err)
	}
	b, err := avro.Marshal(s, v)
	if err != nil {
		r.t.Fatalf("encode Avro: %v", err)
	}
	return Frame(id, nil, b)
}

// JSON registers a JSON Schema under subject and returns value framed.
func (r *Registry) JSON(subject, schema, value string) []byte {
	r.t.Helper()
	return Frame(r.Register(subject, sr.TypeJSON, schema), nil, []byte(value))
}

// Proto registers the .proto source under subject and returns the message
// at index (Confluent's message-index path) with the given fields set,
// encoded and framed. Field values are what protoreflect.ValueOf takes;
// a map[string]any sets a message field's fields.
func (r *Registry) Proto(subject, source string, index []int, fields map[string]any) []byte {
	r.t.Helper()
	id := r.Register(subject, sr.TypeProtobuf, source)
	md := Message(r.t, source, index)
	msg := dynamicpb.NewMessage(md)
	setFields(r.t, msg, fields)
	b, err := proto.Marshal(msg)
	if err != nil {
		r.t.Fatalf("encode Protobuf: %v", err)
	}
	return Frame(id, index, b)
}

// Message compiles .proto source and returns the message at index.
func Message(t testing.TB, source string, index []int) protoreflect.MessageDescriptor {
	t.Helper()
	comp := protocompile.Compiler{Resolver: protocompile.WithStandardImports(&protocompile.SourceResolver{
		Accessor: protocompile.SourceAccessorFromMap(map[string]string{"test.proto": source}),
	})}
	fds, err := comp.Compile(context.Background(), "test.proto")
	if err != nil {
		t.Fatalf("compile: %v", err)
	}
	var md protoreflect.MessageDescriptor
	msgs := fds[0].Messages()
	for _, i := range index {
		md = msgs.Get(i)
		msgs = md.Messages()
	}
	return md
}

func setFields(t testing.TB, msg protoreflect.Message, fields map[string]any) {
	t.Helper()
	for name, v := range fields {
		fd := msg.Descriptor().Fields().ByName(protoreflect.Name(name))
		if fd == nil {
			t.Fatalf("no field %s in %s", name, msg.Descriptor().FullName())
		}
		if sub, ok := v.(map[string]any); ok {
			m := msg.NewField(fd).Message()
			setFields(t, m, sub)
			msg.Set(fd, protoreflect.ValueOfMessage(m))
			continue
		}
		msg.Set(fd, protoreflect.ValueOf(v))
	}
}

// Fail makes the registry answer every request with the HTTP status until
// the returned function is called.
func (r *Registry) Fail(status int) (restore func()) {
	r.Intercept(func(w http.ResponseWriter, _ *http.Request) bool {
		w.WriteHeader(status)
		return true
	})
	return r.ClearInterceptors
}
