package decode

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"reflect"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/sr"

	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/srtest"
)

// Shipments evolve: v2 adds channel with a default, v3 changes qty's type
// (incompatible with v1 and v2 either way).
const (
	shipV1 = `{"type":"record","name":"Shipment","namespace":"t","fields":[
		{"name":"id","type":"long"},
		{"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
		{"name":"qty","type":"int"}]}`
	shipV2 = `{"type":"record","name":"Shipment","namespace":"t","fields":[
		{"name":"id","type":"long"},
		{"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
		{"name":"qty","type":"int"},
		{"name":"channel","type":"string","default":"web"},
		{"name":"rank","type":["null","long"],"default":null}]}`
	shipV3 = `{"type":"record","name":"Shipment","namespace":"t","fields":[
		{"name":"id","type":"long"},
		{"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
		{"name":"qty","type":"string"}]}`
)

var shipAt = time.Date(2026, 3, 1, 10, 0, 0, 0, time.UTC)

func shipV1Value() map[string]any { return map[string]any{"id": int64(7), "at": shipAt, "qty": 3} }

func shipV2Value() map[string]any {
	return map[string]any{"id": int64(8), "at": shipAt, "qty": 4, "channel": "shop", "rank": int64(2)}
}

// shipments is an Avro pipeline with the reader subject at version (""
// for no reader schema); channel is required unless nullable says so.
func shipments(t *testing.T, reg *srtest.Registry, version string, channelNullable bool) *Decoder {
	t.Helper()
	p := config.Pipeline{Format: "avro", Key: []string{"id"},
		Columns: []config.Column{col("id", "bigint"), col("qty", "integer"),
			{Name: "channel", Type: "text", Nullable: channelNullable}, nullable("rank", "bigint")},
		Date: config.Date{Field: "at"}}
	if version != "" {
		p.Avro = &config.Avro{ReaderSubject: "ship-value", ReaderVersion: version}
	}
	return NewDecoder(registryPipeline(t, reg.URL(), p))
}

// countLatest counts the registry's answers for the reader subject's latest
// version.
func countLatest(reg *srtest.Registry) *atomic.Int64 {
	var n atomic.Int64
	reg.Intercept(func(_ http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/subjects/ship-value/versions/latest" {
			n.Add(1)
		}
		return false
	})
	return &n
}

// A v1 record read with the v2 reader takes channel's default: the
// required column is filled instead of the record being dead-lettered, as
// it is without a reader schema. A v2 record keeps its own values.
func TestAvroReaderDefault(t *testing.T) {
	reg := srtest.New(t)
	v1 := reg.Avro("ship-value", shipV1, shipV1Value())
	v2 := reg.Avro("ship-value", shipV2, shipV2Value())

	_, _, err := shipments(t, reg, "", false).Decode(nil, v1, record.Position{})
	if got, want := badReason(t, err), `missing-field: field "channel" (column channel): missing or null (schema id 1)`; got != want {
		t.Fatalf("without a reader schema: %q, want %q", got, want)
	}

	d := shipments(t, reg, "latest", false)
	r1, _ := decodeOK(t, d, nil, v1)
	if want := []any{int64(7), int32(3), "web", nil}; !reflect.DeepEqual(r1.Values, want) {
		t.Errorf("v1 under the v2 reader: %#v, want %#v", r1.Values, want)
	}
	r2, _ := decodeOK(t, d, nil, v2)
	if want := []any{int64(8), int32(4), "shop", int64(2)}; !reflect.DeepEqual(r2.Values, want) {
		t.Errorf("v2 under the v2 reader: %#v, want %#v", r2.Values, want)
	}
}

// A v2 record read with the v1 reader (version pinned) loses the fields v1
// does not have: channel is NULL, where without a reader schema it is the
// record's own value.
func TestAvroReaderDropsField(t *testing.T) {
	reg := srtest.New(t)
	reg.Register("ship-value", sr.TypeAvro, shipV1)
	v2 := reg.Avro("ship-value", shipV2, shipV2Value())

	plain, _ := decodeOK(t, shipments(t, reg, "", true), nil, v2)
	if want := []any{int64(8), int32(4), "shop", int64(2)}; !reflect.DeepEqual(plain.Values, want) {
		t.Errorf("without a reader schema: %#v, want %#v", plain.Values, want)
	}
	// v2 read as v2 first: hamba/avro would hand its decoder to v2 read as
	// v1 (see resolution.api).
	same, _ := decodeOK(t, shipments(t, reg, "2", true), nil, v2)
	if !reflect.DeepEqual(same.Values, plain.Values) {
		t.Errorf("v2 under the v2 reader: %#v, want %#v", same.Values, plain.Values)
	}
	row, _ := decodeOK(t, shipments(t, reg, "1", true), nil, v2)
	if want := []any{int64(8), int32(4), nil, nil}; !reflect.DeepEqual(row.Values, want) {
		t.Errorf("v2 under the v1 reader: %#v, want %#v", row.Values, want)
	}
	if row.ID != plain.ID {
		t.Errorf("record_id %s under the reader, %s without", row.ID, plain.ID)
	}
}

// With latest, the reader is fetched at the first record and again only
// when a writer id newer than any checked appears: a v2 record after the
// v1 reader was fetched brings v2 in (channel is not dropped), and v1
// records are then read with v2's default.
func TestAvroReaderLatestFollowsNewWriters(t *testing.T) {
	reg := srtest.New(t)
	fetches := countLatest(reg)
	v1 := reg.Avro("ship-value", shipV1, shipV1Value())
	d := shipments(t, reg, "latest", true)
	r1, _ := decodeOK(t, d, nil, v1)
	decodeOK(t, d, nil, v1)
	if r1.Values[2] != nil || fetches.Load() != 1 {
		t.Fatalf("v1 under the v1 reader: channel %#v, %d fetches of latest, want nil and 1", r1.Values[2], fetches.Load())
	}

	v2 := reg.Avro("ship-value", shipV2, shipV2Value())
	r2, _ := decodeOK(t, d, nil, v2)
	if r2.Values[2] != "shop" || fetches.Load() != 2 {
		t.Errorf("v2 after the v1 reader: channel %#v, %d fetches of latest, want shop and 2", r2.Values[2], fetches.Load())
	}
	r1, _ = decodeOK(t, d, nil, v1)
	decodeOK(t, d, nil, v2)
	if r1.Values[2] != "web" || fetches.Load() != 2 {
		t.Errorf("v1 after the v2 reader: channel %#v, %d fetches of latest, want web and 2", r1.Values[2], fetches.Load())
	}

	// A newer id from another subject fetches latest once, finds it
	// unchanged, and is read with it.
	other := reg.Avro("other-value", strings.Replace(shipV2, `"web"`, `"app"`, 1), shipV2Value())
	decodeOK(t, d, nil, other)
	decodeOK(t, d, nil, other)
	if fetches.Load() != 3 {
		t.Errorf("%d fetches of latest after a newer id of another subject, want 3", fetches.Load())
	}
}

// A writer the reader cannot read is bad input of class schema, naming
// both ids; other writers keep flowing.
func TestAvroReaderIncompatible(t *testing.T) {
	reg := srtest.New(t)
	v1 := reg.Avro("ship-value", shipV1, shipV1Value())
	v2 := reg.Avro("ship-value", shipV2, shipV2Value())
	v3value := shipV1Value()
	v3value["qty"] = "three"
	v3 := reg.Avro("ship-value", shipV3, v3value) // id 3, the latest

	d := shipments(t, reg, "2", true)
	_, _, err := d.Decode(nil, v3, record.Position{})
	want := "schema: schema id 3 cannot be read as reader schema id 2 (ship-value version 2): field qty: reader schema int not compatible with writer schema string"
	if got := badReason(t, err); got != want {
		t.Errorf("v3 under the v2 reader: %q, want %q", got, want)
	}
	decodeOK(t, d, nil, v1)

	// Under latest (v3), v1 and v2 are the unreadable ones.
	d = shipments(t, reg, "latest", true)
	for id, value := range map[int][]byte{1: v1, 2: v2} {
		_, _, err := d.Decode(nil, value, record.Position{})
		var br *record.BadRecord
		if !strings.HasPrefix(badReason(t, err), fmt.Sprintf("schema: schema id %d cannot be read as reader schema id 3 (ship-value version 3): ", id)) ||
			!errors.As(err, &br) || br.Class != record.ClassSchema {
			t.Errorf("v%d under the v3 reader: %v", id, err)
		}
	}
	// v3 itself is read (and is bad input for its own reason).
	_, _, err = d.Decode(nil, v3, record.Position{})
	if got := badReason(t, err); !strings.HasPrefix(got, "wrong-type: ") {
		t.Errorf("v3 under the v3 reader: %q, want wrong-type", got)
	}

	// A reader field without a default cannot be filled from v1.
	reg.Register("strict-value", sr.TypeAvro, strings.Replace(shipV2, `,"default":"web"`, ``, 1))
	p := config.Pipeline{Format: "avro", Key: []string{"id"}, Columns: []config.Column{col("id", "bigint")}, Date: config.Date{Field: "at"},
		Avro: &config.Avro{ReaderSubject: "strict-value", ReaderVersion: "latest"}}
	_, _, err = NewDecoder(registryPipeline(t, reg.URL(), p)).Decode(nil, v1, record.Position{})
	if got, want := badReason(t, err), "schema: schema id 1 cannot be read as reader schema id 4 (strict-value version 1): "+
		"field channel: reader field channel is missing in writer schema and has no default"; got != want {
		t.Errorf("v1 under a reader without channel's default: %q, want %q", got, want)
	}
}

// A record that contains itself cannot be resolved (hamba/avro's Resolve
// would overflow the stack): bad input, and the process lives on.
func TestAvroReaderRecursiveSchema(t *testing.T) {
	reg := srtest.New(t)
	list := `{"type":"record","name":"Node","fields":[{"name":"id","type":"long"},
		{"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
		{"name":"next","type":["null","Node"]}]}`
	value := reg.Avro("ship-value", list, map[string]any{"id": int64(1), "at": shipAt, "next": nil})
	p := config.Pipeline{Format: "avro", Key: []string{"id"}, Columns: []config.Column{col("id", "bigint")}, Date: config.Date{Field: "at"},
		Avro: &config.Avro{ReaderSubject: "ship-value", ReaderVersion: "latest"}}
	_, _, err := NewDecoder(registryPipeline(t, reg.URL(), p)).Decode(nil, value, record.Position{})
	if got, want := badReason(t, err), "schema: schema id 1 cannot be read as reader schema id 1 (ship-value version 1): record Node contains itself, which schema resolution does not support"; got != want {
		t.Errorf("reason %q, want %q", got, want)
	}
}

// A reader schema that cannot be had is an outage, not bad input: a
// missing subject, a registry that fails, a subject of another format.
// The record decodes once the reader schema is there.
func TestAvroReaderUnavailable(t *testing.T) {
	reg := srtest.New(t)
	v1 := reg.Avro("other-value", shipV1, shipV1Value())
	d := shipments(t, reg, "latest", true)
	d.SetRegistryBackoff(time.Nanosecond, time.Nanosecond)
	_, _, err := d.Decode(nil, v1, record.Position{})
	if !Unavailable(err) || !strings.Contains(err.Error(), "reader schema ship-value version latest: not in the schema registry") {
		t.Fatalf("missing reader subject: %v", err)
	}

	reg.Register("ship-value", sr.TypeJSON, `{"type":"object"}`)
	_, _, err = d.Decode(nil, v1, record.Position{})
	if !Unavailable(err) || !strings.Contains(err.Error(), "is a JSON schema, not Avro") {
		t.Fatalf("JSON reader subject: %v", err)
	}

	reg.Register("ship-value", sr.TypeAvro, shipV2)
	restore := reg.Fail(http.StatusServiceUnavailable)
	_, _, err = d.Decode(nil, v1, record.Position{})
	if !Unavailable(err) {
		t.Fatalf("registry down: %v", err)
	}
	restore()
	row, _ := decodeOK(t, d, nil, v1)
	if row.Values[2] != "web" {
		t.Errorf("channel %#v, want the default web", row.Values[2])
	}
}

// local-timestamp fields of the reader schema are rewritten as the
// writer's are: a wall clock, the same in every host zone.
func TestAvroReaderLocalTimestamp(t *testing.T) {
	w := `{"type":"record","name":"E","fields":[{"name":"id","type":"long"},
		{"name":"at","type":{"type":"long","logicalType":"local-timestamp-micros"}}]}`
	payload := binary.AppendVarint(nil, 7)
	payload = binary.AppendVarint(payload, 1772359200123456) // 2026-03-01 10:00:00.123456
	p := config.Pipeline{Format: "avro", Key: []string{"id"},
		Columns: []config.Column{col("id", "bigint"), col("at", "timestamp"), col("ms", "timestamptz")}, Date: config.Date{Field: "at"},
		Avro: &config.Avro{ReaderSubject: "e-value", ReaderVersion: "latest"}}
	want := []any{int64(7), time.Date(2026, 3, 1, 10, 0, 0, 123456000, time.UTC), time.Date(2026, 3, 1, 10, 0, 0, 123000000, time.UTC)}
	local := time.Local
	defer func() { time.Local = local }()
	for _, zone := range []string{"UTC", "Asia/Kolkata"} {
		loc, err := time.LoadLocation(zone)
		if err != nil {
			t.Fatal(err)
		}
		// A registry per zone, started after time.Local is set and closed
		// before it is set again: its HTTP server reads time.Local too.
		time.Local = loc
		reg := srtest.New(t)
		id := reg.Register("e-value", sr.TypeAvro, w)
		reg.Register("e-value", sr.TypeAvro, strings.Replace(w, `}}]}`,
			`}},{"name":"ms","type":{"type":"long","logicalType":"local-timestamp-millis"},"default":1772359200123}]}`, 1))
		row, _ := decodeOK(t, NewDecoder(registryPipeline(t, reg.URL(), p)), nil, srtest.Frame(id, nil, payload))
		reg.Close()
		if !reflect.DeepEqual(row.Values, want) {
			t.Errorf("TZ=%s: %v, want %v", zone, row.Values, want)
		}
	}
}
