package srtest_test

// End to end: records in the registry formats, Debezium change events and
// deletes, produced into Kafka (kfake, or the real broker under
// scripts/test-kafka), consumed by the daemon's consumer, checked in
// PostgreSQL.

import (
	"context"
	"encoding/binary"
	"fmt"
	"math/big"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/config"
	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/metrics"
	"github.com/idemsink/idemsink/internal/pgtest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/sink"
	"github.com/idemsink/idemsink/internal/srtest"
	"github.com/idemsink/idemsink/internal/waittest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// harness is one test's Kafka, registry and database.
type harness struct {
	t    *testing.T
	k    *kafkatest.Cluster
	reg  *srtest.Registry
	pool *pgxpool.Pool
}

func newHarness(t *testing.T) *harness {
	return &harness{t: t, k: kafkatest.New(t), reg: srtest.New(t), pool: pgtest.Pool(t)}
}

func (h *harness) config(group string, pipelines ...config.Pipeline) *config.Config {
	h.t.Helper()
	cfg := &config.Config{
		Brokers: h.k.Brokers, Group: group, DatabaseURL: h.pool.Config().ConnString(), Pipelines: pipelines,
		SchemaRegistry:   &config.SchemaRegistry{URL: h.reg.URL()},
		SessionTimeout:   6 * time.Second,
		RebalanceTimeout: 10 * time.Second,
		RetryBackoff:     20 * time.Millisecond,
		RetryBackoffMax:  200 * time.Millisecond,
		ShutdownTimeout:  10 * time.Second,
	}
	for i := range cfg.Pipelines {
		cfg.Pipelines[i].Batch.Linger = 20 * time.Millisecond
	}
	cfg.SetDefaults()
	if err := cfg.Validate(); err != nil {
		h.t.Fatal(err)
	}
	return cfg
}

// run consumes with cfg until every partition of the topics is applied,
// then stops, and returns the totals.
func (h *harness) run(cfg *config.Config, opts consume.Options, m *metrics.Metrics) sink.Result {
	h.t.Helper()
	_, wait := h.start(cfg, opts, m)
	return wait()
}

// start starts a consumer with cfg; wait waits until every partition of
// the topics is applied, then stops it and returns the totals.
func (h *harness) start(cfg *config.Config, opts consume.Options, m *metrics.Metrics) (c *consume.Consumer, wait func() sink.Result) {
	h.t.Helper()
	s := sink.New(h.pool, cfg, sink.Options{Metrics: m})
	ctx, cancel := context.WithCancel(context.Background())
	h.t.Cleanup(cancel)
	if err := s.EnsureTables(ctx, cfg); err != nil {
		h.t.Fatal(err)
	}
	results := make(chan sink.Result, 10000)
	opts.Config, opts.Sink, opts.Metrics = cfg, s, m
	opts.OnBatch = func(_ *batch.Unit, r sink.Result) { results <- r }
	c = consume.New(opts)
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	return c, func() sink.Result {
		h.t.Helper()
		ends := map[record.TP]int64{}
		for _, topic := range cfg.Topics() {
			for p, end := range h.k.Ends(topic) {
				ends[record.TP{Topic: topic, Partition: p}] = end
			}
		}
		waittest.For(h.t, 60*time.Second, "every partition applied", func() bool {
			ok, err := s.CaughtUp(ctx, cfg.Group, ends)
			if err != nil {
				h.t.Fatal(err)
			}
			return ok
		})
		cancel()
		if err := <-done; err != nil {
			h.t.Fatalf("consumer: %v", err)
		}
		var total sink.Result
		for {
			select {
			case r := <-results:
				total.Add(r)
			default:
				return total
			}
		}
	}
}

func (h *harness) query(q string, args ...any) string {
	h.t.Helper()
	var s *string
	if err := h.pool.QueryRow(context.Background(), q, args...).Scan(&s); err != nil {
		h.t.Fatalf("%s: %v", q, err)
	}
	if s == nil {
		return ""
	}
	return *s
}

func ordersPipeline(name, topic, format string) config.Pipeline {
	return config.Pipeline{
		Name: name, Topics: []string{topic}, Table: name, Format: format, KeyFormat: "json", Deletes: "apply",
		Key: []string{"id"},
		Columns: []config.Column{
			{Name: "id", Type: "bigint"}, {Name: "amount", Type: "numeric"}, {Name: "at", Type: "timestamptz"},
			{Name: "qty", Type: "integer"}, {Name: "note", Type: "text", Nullable: true},
		},
		Date: config.Date{Field: "at"},
	}
}

const (
	avroV1 = `{"type":"record","name":"Order","fields":[
		{"name":"id","type":"long"},
		{"name":"amount","type":{"type":"bytes","logicalType":"decimal","precision":12,"scale":2}},
		{"name":"at","type":{"type":"long","logicalType":"timestamp-micros"}},
		{"name":"qty","type":"int"}]}`
	protoV1 = `syntax = "proto3";
import "google/protobuf/timestamp.proto";
message Order {
  int64 id = 1;
  string amount = 2;
  google.protobuf.Timestamp at = 3;
  int32 qty = 4;
}`
)

var (
	avroV2 = strings.Replace(avroV1, `{"name":"qty","type":"int"}]}`, `{"name":"qty","type":"int"},{"name":"note","type":["null","string"],"default":null}]}`, 1)
	avroV3 = strings.Replace(avroV1, `,
		{"name":"qty","type":"int"}`, ``, 1)
	protoV2 = strings.Replace(protoV1, "int32 qty = 4;", "int32 qty = 4;\n  optional string note = 5;", 1)
	protoV3 = strings.Replace(protoV1, "int32 qty = 4;", "reserved 4;", 1)
)

// order is one test record: what it says, in every format.
type order struct {
	schema int // 1, 2 or 3: the writer schema version
	id     int64
	qty    int32
	note   string
}

var at = time.Date(2026, 3, 1, 10, 0, 0, 123456000, time.UTC)

func (h *harness) encode(format, subject string, o order) []byte {
	switch format {
	case "avro":
		v := map[string]any{"id": o.id, "amount": big.NewRat(o.id*100+5, 100), "at": at, "qty": o.qty}
		schema := map[int]string{1: avroV1, 2: avroV2, 3: avroV3}[o.schema]
		if o.schema == 2 {
			v["note"] = o.note
		}
		if o.schema == 3 {
			delete(v, "qty")
		}
		return h.reg.Avro(subject, schema, v)
	case "protobuf":
		v := map[string]any{"id": o.id, "amount": fmt.Sprintf("%d.05", o.id), "at": map[string]any{"seconds": at.Unix(), "nanos": int32(at.Nanosecond())}, "qty": o.qty}
		schema := map[int]string{1: protoV1, 2: protoV2, 3: protoV3}[o.schema]
		if o.schema == 2 {
			v["note"] = o.note
		}
		if o.schema == 3 {
			delete(v, "qty")
		}
		return h.reg.Proto(subject, schema, []int{0}, v)
	}
	j := fmt.Sprintf(`{"id":%d,"amount":%d.05,"at":%q`, o.id, o.id, at.Format(time.RFC3339Nano))
	if o.schema != 3 {
		j += fmt.Sprintf(`,"qty":%d`, o.qty)
	}
	if o.schema == 2 {
		j += fmt.Sprintf(`,"note":%q`, o.note)
	}
	return h.reg.JSON(subject, fmt.Sprintf(`{"type":"object","title":"v%d"}`, o.schema), j+"}")
}

// Each registry format, with the writer schema moving mid-stream: an
// optional field added flows and fills its column, a schema that drops a
// required field is dead-lettered with its id, a tombstone deletes.
func TestRegistryFormatsEndToEnd(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	var pipelines []config.Pipeline
	for _, format := range []string{"avro", "protobuf", "json_schema"} {
		topic := h.k.Topic(format, 2)
		pipelines = append(pipelines, ordersPipeline("orders_"+format, topic, format))
		var recs []*kgo.Record
		for _, o := range []order{{1, 1, 1, ""}, {1, 2, 2, ""}, {1, 3, 3, ""}, {2, 4, 4, "gift"}, {2, 1, 10, ""}, {3, 5, 5, ""}} {
			recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(o.id % 2), Key: fmt.Appendf(nil, `{"id":%d}`, o.id),
				Value: h.encode(format, topic+"-value", o)})
		}
		recs = append(recs, &kgo.Record{Topic: topic, Partition: 0, Key: []byte(`{"id":2}`)}) // tombstone
		h.k.Produce(recs...)
	}
	m := metrics.New(nil)
	res := h.run(h.config(kafkatest.Name(t, "g"), pipelines...), consume.Options{}, m)
	// The tombstone and the rows of its key land in one transaction (a
	// transaction takes every date of its lane, and a tombstone has none):
	// the tombstone supersedes them there, so no row is written and none
	// deleted, and the tombstone is kept.
	if res.Deleted != 0 || res.DeadLettered != 3 {
		t.Errorf("totals %+v: want 0 deleted (superseded in the transaction), 3 dead-lettered", res)
	}
	for _, p := range pipelines {
		got := h.query(fmt.Sprintf(`SELECT string_agg(format('%%s:%%s:%%s:%%s:%%s', id, amount, qty, coalesce(note, '-'), at = '2026-03-01T10:00:00.123456Z'), ' ' ORDER BY id) FROM %s`, p.Table))
		if want := "1:1.05:10::t 3:3.05:3:-:t 4:4.05:4:gift:t"; got != want {
			t.Errorf("%s: rows %s, want %s", p.Name, got, want)
		}
		reason := h.query(`SELECT reason FROM idemsink.dead_letters WHERE pipeline = $1`, p.Name)
		if !strings.Contains(reason, `field "qty" (column qty): missing or null (schema id `) {
			t.Errorf("%s: dead letter %q does not name the missing field and the schema id", p.Name, reason)
		}
		if n := h.query(`SELECT count(*) FROM idemsink.tombstones WHERE pipeline = $1`, p.Name); n != "1" {
			t.Errorf("%s: %s tombstones kept, want 1", p.Name, n)
		}
		if v := testutil.ToFloat64(m.Records.WithLabelValues(p.Name, "deleted")); v != 0 {
			t.Errorf("%s: deleted metric %v, want 0", p.Name, v)
		}
	}
}

// With avro.reader_subject, records are read as the subject's latest
// schema: v1 records get the default of the field v2 added, v2 records
// keep their value, and a writer the reader cannot read is dead-lettered
// as schema:, naming both ids.
func TestAvroReaderSchemaEndToEnd(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	topic := h.k.Topic("avro", 2)
	subject := topic + "-value"
	withDefault := strings.Replace(avroV1, `{"name":"qty","type":"int"}]}`, `{"name":"qty","type":"int"},{"name":"note","type":"string","default":"none"}]}`, 1)
	qtyText := strings.Replace(avroV1, `{"name":"qty","type":"int"}`, `{"name":"qty","type":"string"}`, 1)
	v := func(id int64) map[string]any {
		return map[string]any{"id": id, "amount": big.NewRat(id*100+5, 100), "at": at, "qty": int32(id)}
	}
	v3 := v(3)
	v3["note"] = "gift"
	v4 := v(4)
	v4["qty"] = "four"
	values := [][]byte{
		h.reg.Avro(subject, avroV1, v(1)), h.reg.Avro(subject, avroV1, v(2)),
		h.reg.Avro(subject, withDefault, v3),       // id 2, the reader (latest)
		h.reg.Avro("elsewhere-value", qtyText, v4), // id 3, not readable as id 2
	}
	var recs []*kgo.Record
	for i, value := range values {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(i % 2), Value: value})
	}
	h.k.Produce(recs...)
	p := ordersPipeline("orders", topic, "avro")
	p.Avro = &config.Avro{ReaderSubject: subject}
	res := h.run(h.config(kafkatest.Name(t, "g"), p), consume.Options{}, metrics.New(nil))
	if res.Inserted != 3 || res.DeadLettered != 1 {
		t.Errorf("totals %+v: want 3 inserted, 1 dead-lettered", res)
	}
	got := h.query(`SELECT string_agg(format('%s:%s:%s:%s', id, amount, qty, note), ' ' ORDER BY id) FROM orders`)
	if want := "1:1.05:1:none 2:2.05:2:none 3:3.05:3:gift"; got != want {
		t.Errorf("rows %s, want %s", got, want)
	}
	reason := h.query(`SELECT reason FROM idemsink.dead_letters WHERE pipeline = 'orders'`)
	if want := fmt.Sprintf("schema: schema id 3 cannot be read as reader schema id 2 (%s version 2): field qty: reader schema int not compatible with writer schema string", subject); reason != want {
		t.Errorf("dead letter %q, want %q", reason, want)
	}
}

// avroOrders makes a topic of parts partitions holding n Avro orders of one
// writer schema, spread over the partitions in turn.
func (h *harness) avroOrders(parts int32, n int64) string {
	h.t.Helper()
	topic := h.k.Topic("avro", parts)
	var recs []*kgo.Record
	for id := range n {
		recs = append(recs, &kgo.Record{Topic: topic, Partition: int32(id % int64(parts)), Value: h.encode("avro", topic+"-value", order{1, id, 1, ""})})
	}
	h.k.Produce(recs...)
	return topic
}

// A registry outage holds the records back: nothing is dead-lettered, the
// consumer is not ready meanwhile (as in a database outage, while the
// database answers), and once the registry answers the records are applied
// and the consumer is ready again.
func TestRegistryOutageIsNotBadInput(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	topic := h.avroOrders(2, 6)
	restore := h.reg.Fail(http.StatusServiceUnavailable)
	m := metrics.New(nil)
	c, wait := h.start(h.config(kafkatest.Name(t, "g"), ordersPipeline("orders", topic, "avro")), consume.Options{}, m)
	waittest.For(t, 30*time.Second, "the consumer turned away by the registry a few times", func() bool {
		return testutil.ToFloat64(m.RegistryRetries) >= 3
	})
	// Held back, the partitions stay so until the registry answers.
	if c.Ready() || testutil.ToFloat64(m.Ready) != 0 {
		t.Errorf("ready (Ready() %v, idemsink_ready %v) while the schema registry is out", c.Ready(), testutil.ToFloat64(m.Ready))
	}
	restore()
	waittest.For(t, 30*time.Second, "ready again after the registry answers", func() bool {
		return c.Ready() && testutil.ToFloat64(m.Ready) == 1
	})
	if res := wait(); res.DeadLettered != 0 || res.Inserted != 6 {
		t.Errorf("totals %+v: want 6 inserted, none dead-lettered", res)
	}
	if n := h.query(`SELECT count(*)::text FROM idemsink.dead_letters`); n != "0" {
		t.Errorf("%s dead letters", n)
	}
}

// A registry that accepts connections and never answers costs one request
// timeout per backoff, not one per held-back partition: while it is known
// to be out, the other partitions are held back at once, without asking it
// (and so without holding the poll loop for a timeout each).
func TestRegistryHangingAskedOncePerBackoff(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	const parts = 4
	topic := h.avroOrders(parts, 2*parts)
	var requests atomic.Int64
	release := make(chan struct{})
	h.reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		requests.Add(1)
		select {
		case <-r.Context().Done(): // the client's timeout
		case <-release:
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	cfg := h.config(kafkatest.Name(t, "g"), ordersPipeline("orders", topic, "avro"))
	cfg.SchemaRegistry.Timeout = 300 * time.Millisecond
	cfg.RetryBackoff, cfg.RetryBackoffMax = 2*time.Second, 2*time.Second
	m := metrics.New(nil)
	c, wait := h.start(cfg, consume.Options{}, m)
	waittest.For(t, 60*time.Second, "partitions held back twice over", func() bool {
		return testutil.ToFloat64(m.RegistryRetries) >= 2*parts
	})
	n, retries := requests.Load(), testutil.ToFloat64(m.RegistryRetries)
	// Asked about one partition's record per backoff (plus one in flight),
	// the others held back without a request: asked once per partition
	// and retry, it would be asked as often as it held one back.
	if float64(2*n) > retries {
		t.Errorf("%d registry requests for %v held-back partitions: the hanging registry was asked per partition, not once per backoff", n, retries)
	}
	if c.Ready() {
		t.Error("ready while the schema registry hangs")
	}
	h.reg.ClearInterceptors()
	close(release)
	if res := wait(); res.Inserted != 2*parts || res.DeadLettered != 0 {
		t.Errorf("totals %+v: want %d inserted, none dead-lettered", res, 2*parts)
	}
}

// An outage met mid-stream, at the first record of a new writer schema:
// the partition is held back at that record, the records before it apply
// meanwhile, and once the registry answers the partition goes on from the
// held-back record: nothing dead-lettered, nothing read twice.
func TestRegistryOutageMidStream(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	topic := h.k.Topic("avro", 1)
	var recs []*kgo.Record
	for id := range int64(10) {
		o := order{1, id, 1, ""}
		if id >= 5 {
			o = order{2, id, 1, "n"}
		}
		recs = append(recs, &kgo.Record{Topic: topic, Value: h.encode("avro", topic+"-value", o)})
	}
	h.k.Produce(recs...)
	v2 := binary.BigEndian.Uint32(recs[5].Value[1:5]) // the Confluent header's schema id
	v2Path := fmt.Sprintf("/schemas/ids/%d", v2)
	h.reg.Intercept(func(w http.ResponseWriter, r *http.Request) bool {
		if !strings.HasPrefix(r.URL.Path, v2Path) {
			return false
		}
		w.WriteHeader(http.StatusServiceUnavailable)
		return true
	})
	m := metrics.New(nil)
	heldApplied := make(chan string, 1)
	go func() {
		// The registry comes back once the consumer has been turned away
		// a few times and the records before the new schema are applied.
		applied := ""
		waittest.Until(30*time.Second, func() bool { // a goroutine: the test checks applied below
			var a *int64
			if err := h.pool.QueryRow(context.Background(), `SELECT max(applied_offset) FROM idemsink.offsets WHERE topic = $1`, topic).Scan(&a); err == nil && a != nil {
				applied = fmt.Sprint(*a)
			}
			return testutil.ToFloat64(m.RegistryRetries) >= 3 && applied == "4"
		})
		heldApplied <- applied
		h.reg.ClearInterceptors()
	}()
	res := h.run(h.config(kafkatest.Name(t, "g"), ordersPipeline("orders", topic, "avro")), consume.Options{}, m)
	if a := <-heldApplied; a != "4" {
		t.Errorf("ledger at %q while the partition was held back at offset 5, want 4: the records before it apply meanwhile", a)
	}
	if res.Records != 10 || res.DeadLettered != 0 || res.Inserted != 10 || res.Skipped != 0 || res.Superseded != 0 || res.Unchanged != 0 {
		t.Errorf("totals %+v: want 10 records, 10 inserted, none dead-lettered, skipped, superseded or unchanged", res)
	}
	if n := h.query(`SELECT count(*)::text FROM orders WHERE note = 'n'`); n != "5" {
		t.Errorf("%s rows of the new schema, want 5", n)
	}
}

func debeziumEvent(op string, id int, name string, lsn int) []byte {
	row := fmt.Sprintf(`{"id":%d,"name":%q,"updated":1772359200000000}`, id, name)
	before, after := "null", row
	if op == "d" {
		before, after = row, "null"
	}
	return fmt.Appendf(nil, `{"before":%s,"after":%s,"source":{"version":"2.7.3.Final","connector":"postgresql","name":"pg",
		"ts_ms":1772359200123,"snapshot":%q,"db":"shop","schema":"public","table":"customers","txId":770,"lsn":%d},
		"op":%q,"ts_ms":1772359200200}`, before, after, map[bool]string{true: "true", false: "false"}[op == "r"], lsn, op)
}

// Debezium change events through the consumer: a snapshot overlapping the
// stream, deletes and the tombstones after them. Then a crash between the
// PostgreSQL and the Kafka commits (the next run resumes from the ledger)
// and a replay from the start under a new group write nothing.
func TestDebeziumEndToEnd(t *testing.T) {
	t.Parallel()
	h := newHarness(t)
	topic := h.k.Topic("pg.public.customers", 1)
	p := config.Pipeline{
		Name: "customers", Topics: []string{topic}, Table: "customers", Format: "debezium", Deletes: "apply",
		Key: []string{"id"},
		Columns: []config.Column{{Name: "id", Type: "bigint"}, {Name: "name", Type: "text"},
			{Name: "updated", Type: "timestamptz", SemanticType: "io.debezium.time.MicroTimestamp"}},
		Date: config.Date{Field: "updated"},
	}
	var recs []*kgo.Record
	add := func(op string, id int, name string, lsn int) {
		recs = append(recs, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, `{"id":%d}`, id), Value: debeziumEvent(op, id, name, lsn)})
		if op == "d" {
			recs = append(recs, &kgo.Record{Topic: topic, Key: fmt.Appendf(nil, `{"id":%d}`, id)}) // Debezium's tombstone
		}
	}
	add("u", 1, "streamed", 300)
	add("c", 2, "two", 310)
	add("r", 1, "snapshot", 100) // the snapshot reads the row late: older LSN
	add("d", 2, "two", 320)
	add("r", 3, "three", 100)
	add("c", 4, "four", 340)
	add("d", 4, "four", 350)
	add("r", 4, "snapshot", 100) // a snapshot row after its delete: stays deleted
	h.k.Produce(recs...)

	rows := func() string {
		return h.query(`SELECT string_agg(format('%s:%s', id, name), ' ' ORDER BY id) FROM customers`)
	}
	xmins := func() string {
		return h.query(`SELECT string_agg(x, ' ' ORDER BY x) FROM (SELECT xmin::text AS x FROM customers
			UNION ALL SELECT xmin::text FROM idemsink.tombstones) s`)
	}
	group := kafkatest.Name(t, "g")
	// NoKafkaCommit: the PostgreSQL commits happen, the Kafka ones do not,
	// as with a crash between them.
	res := h.run(h.config(group, p), consume.Options{NoKafkaCommit: true}, metrics.New(nil))
	if got, want := rows(), "1:streamed 3:three"; got != want {
		t.Fatalf("rows %s, want %s", got, want)
	}
	// updated is microseconds since the epoch (semantic_type
	// MicroTimestamp), not milliseconds.
	if got := h.query(`SELECT string_agg(DISTINCT updated::text, ' ') FROM customers`); got != "2026-03-01 10:00:00+00" {
		t.Errorf("updated %s, want 2026-03-01 10:00:00+00", got)
	}
	// Every event of a key is in one transaction: the deletes supersede
	// the rows they delete there, so nothing is deleted from the table,
	// and both tombstones are kept.
	if res.Deleted != 0 || res.DeadLettered != 0 {
		t.Errorf("first run %+v: want 0 deleted (superseded in the transaction), none dead-lettered", res)
	}
	if n := h.query(`SELECT count(*) FROM idemsink.tombstones`); n != "2" {
		t.Errorf("%s tombstones kept, want 2", n)
	}
	before := xmins()
	if c := h.k.Committed(group, topic); c[0] > 0 {
		t.Fatalf("Kafka committed %v; the test wants the crash window", c)
	}

	res = h.run(h.config(group, p), consume.Options{}, metrics.New(nil))
	if res.Inserted+res.Updated+res.Deleted != 0 {
		t.Errorf("after the crash: %+v, want nothing written", res)
	}
	res = h.run(h.config(kafkatest.Name(t, "replay"), p), consume.Options{}, metrics.New(nil))
	if res.Inserted+res.Updated+res.Deleted != 0 || res.Records != len(recs) {
		t.Errorf("replay: %+v, want all %d records read and nothing written", res, len(recs))
	}
	if got := rows(); got != "1:streamed 3:three" {
		t.Errorf("rows after replay: %s", got)
	}
	if after := xmins(); after != before {
		t.Errorf("xmins %s after the replay, were %s: rows or tombstones were rewritten", after, before)
	}
}
