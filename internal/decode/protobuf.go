package decode

import (
	"context"
	"encoding/base64"
	"encoding/binary"
	"errors"
	"fmt"
	"strings"

	"github.com/bufbuild/protocompile"
	"github.com/twmb/franz-go/pkg/sr"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/descriptorpb"
	"google.golang.org/protobuf/types/dynamicpb"
)

type protoFile = protoreflect.FileDescriptor

// protoRoot names the registry schema among the files the compiler sees.
const protoRoot = "idemsink-registry-schema.proto"

// parseProto compiles a Protobuf schema from the registry. A registry
// holds either .proto source (what Confluent's registry returns) or a
// base64 FileDescriptorProto (what Confluent's serializers register);
// both are accepted. Imports resolve to the schema's references, fetched
// from the registry, and to the well-known google/protobuf files.
func (r *Registry) parseProto(id int, s sr.Schema) (protoFile, error) {
	refs, err := r.references(s.References)
	if err != nil {
		return nil, err
	}
	files := map[string]sr.Schema{protoRoot: s}
	for _, ref := range refs {
		files[ref.name] = ref.schema
	}
	resolver := protocompile.ResolverFunc(func(name string) (protocompile.SearchResult, error) {
		f, ok := files[name]
		if !ok {
			return protocompile.SearchResult{}, fmt.Errorf("file %q: %w", name, errors.ErrUnsupported)
		}
		if fd := descriptorText(f.Schema); fd != nil {
			fd.Name = proto.String(name)
			return protocompile.SearchResult{Proto: fd}, nil
		}
		return protocompile.SearchResult{Source: strings.NewReader(f.Schema)}, nil
	})
	comp := protocompile.Compiler{Resolver: protocompile.WithStandardImports(resolver)}
	fds, err := comp.Compile(context.Background(), protoRoot)
	if err != nil {
		return nil, fmt.Errorf("compile Protobuf schema: %w", err)
	}
	return fds[0], nil
}

// descriptorText returns the FileDescriptorProto that s encodes in base64,
// or nil if s is .proto source.
func descriptorText(s string) *descriptorpb.FileDescriptorProto {
	b, err := base64.StdEncoding.DecodeString(strings.TrimSpace(s))
	if err != nil {
		return nil
	}
	var fd descriptorpb.FileDescriptorProto
	if proto.Unmarshal(b, &fd) != nil {
		return nil
	}
	// protoc fills in every field's json_name; other serializers (Python's)
	// leave it out, and the compiler then reads each field as claiming the
	// custom JSON name "". Fill in protoc's default.
	var fill func([]*descriptorpb.DescriptorProto)
	fill = func(msgs []*descriptorpb.DescriptorProto) {
		for _, m := range msgs {
			for _, f := range append(m.Field, m.Extension...) {
				if f.GetJsonName() == "" {
					f.JsonName = proto.String(jsonName(f.GetName()))
				}
			}
			fill(m.NestedType)
		}
	}
	fill(fd.MessageType)
	return &fd
}

// decodeProto reads the message-index prefix that follows the schema id,
// decodes the payload as that message and returns it as JSON with the
// .proto field names, every field present (unset ones as their default or
// null), 64-bit integers as strings, enums by name and well-known types
// (Timestamp, wrappers) in their JSON mapping.
func decodeProto(fd protoFile, b []byte) ([]byte, error) {
	index, payload, err := messageIndex(b, 32)
	if err != nil {
		return nil, err
	}
	var md protoreflect.MessageDescriptor
	msgs := fd.Messages()
	for _, i := range index {
		if i < 0 || i >= msgs.Len() {
			return nil, fmt.Errorf("Protobuf message index %v: no such message in the schema", index)
		}
		md = msgs.Get(i)
		msgs = md.Messages()
	}
	msg := dynamicpb.NewMessage(md)
	if err := proto.Unmarshal(payload, msg); err != nil {
		return nil, fmt.Errorf("decode Protobuf %s: %w", md.FullName(), err)
	}
	// A message has no end marker: bytes after it read as more fields.
	// Read with its own writer schema, a field the schema does not have
	// is bytes that are not this record (trailing data, another message).
	if n := unknownBytes(msg); n > 0 {
		return nil, fmt.Errorf("decode Protobuf %s: %d bytes are fields its writer schema does not have (trailing or foreign data)", md.FullName(), n)
	}
	j, err := protojson.MarshalOptions{UseProtoNames: true, EmitUnpopulated: true}.Marshal(msg)
	if err != nil {
		return nil, fmt.Errorf("decode Protobuf %s: %w", md.FullName(), err)
	}
	return j, nil
}

// jsonName is protoc's default JSON name of a field: underscores dropped,
// each letter after one upper-cased.
func jsonName(name string) string {
	var b strings.Builder
	up := false
	for _, r := range name {
		switch {
		case r == '_':
			up = true
		case up && r >= 'a' && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
			up = false
		default:
			b.WriteRune(r)
			up = false
		}
	}
	return b.String()
}

// messageIndex reads the Confluent Protobuf message-index prefix: a zigzag
// varint count, then that many indexes (count 0 is [0]). Each fault is
// named as what it is, not as a bad header.
func messageIndex(b []byte, max int) ([]int, []byte, error) {
	count, n := binary.Varint(b)
	switch {
	case n <= 0:
		return nil, nil, fmt.Errorf("Protobuf message index: the count is missing or not a varint")
	case count == 0:
		return []int{0}, b[n:], nil
	case count < 0:
		return nil, nil, fmt.Errorf("Protobuf message index: count %d is negative", count)
	case count > int64(max):
		return nil, nil, fmt.Errorf("Protobuf message index: count %d is more than %d", count, max)
	}
	b = b[n:]
	index := make([]int, count)
	for i := range index {
		v, n := binary.Varint(b)
		if n <= 0 {
			return nil, nil, fmt.Errorf("Protobuf message index: index %d of %d is missing or not a varint", i+1, count)
		}
		index[i], b = int(v), b[n:]
	}
	return index, b, nil
}

// unknownBytes counts the bytes of fields the schema does not have, in m
// and every message it holds.
func unknownBytes(m protoreflect.Message) int {
	n := len(m.GetUnknown())
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsMap():
			if fd.MapValue().Message() != nil {
				v.Map().Range(func(_ protoreflect.MapKey, e protoreflect.Value) bool { n += unknownBytes(e.Message()); return true })
			}
		case fd.IsList():
			if fd.Message() != nil {
				for i := range v.List().Len() {
					n += unknownBytes(v.List().Get(i).Message())
				}
			}
		case fd.Message() != nil:
			n += unknownBytes(v.Message())
		}
		return true
	})
	return n
}
