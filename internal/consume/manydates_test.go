package consume_test

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/consume"
	"github.com/idemsink/idemsink/internal/kafkatest"
	"github.com/idemsink/idemsink/internal/record"
	"github.com/idemsink/idemsink/internal/waittest"
)

// Records of 1,000 target dates, interleaved, make transactions as full as
// if they had one date (a transaction takes every date of its lane), while
// each date keeps its own rows and batch-log entries.
func TestManyDatesFillTransactions(t *testing.T) {
	t.Parallel()
	const (
		dates      = 1000
		keys       = 12000
		updates    = 3000 // of keys already sent, on the same date
		maxRecords = 500
	)
	k := kafkatest.New(t)
	topic := k.Topic("t", 4)
	p := simplePipeline("p", topic, "items", false)
	p.Batch.MaxRecords = maxRecords
	p.Batch.Linger = time.Hour // flushed by records only; the rest at shutdown
	e := newEnv(t, k, p)

	day0 := time.Date(2024, 1, 1, 12, 0, 0, 0, time.UTC)
	dateOf := func(id int) time.Time { return day0.AddDate(0, 0, id%dates) }
	perDate := map[string]int{} // records per date
	var recs []*kgo.Record
	add := func(id int, status string) {
		ts := dateOf(id)
		perDate[ts.Format(time.DateOnly)]++
		recs = append(recs, kafkaRecord(topic, int32(id%4), rec{ID: int64(id), Status: status, Qty: id, TS: ts.Format(time.RFC3339)}))
	}
	for id := range keys {
		add(id, "new")
	}
	for id := range updates {
		add(id*4, "updated")
	}
	k.Produce(recs...)

	mb := e.start(e.cfg, consume.Options{})
	applied := func() float64 {
		return testutil.ToFloat64(mb.m.Buffered) + histogramSum(t, mb, "idemsink_transaction_records")
	}
	waittest.For(t, 60*time.Second, "every record applied or buffered", func() bool { return applied() == float64(len(recs)) })
	if err := mb.stop(); err != nil {
		t.Fatal(err)
	}

	n, sum := histogramCount(t, mb, "idemsink_transaction_records"), histogramSum(t, mb, "idemsink_transaction_records")
	if sum != float64(len(recs)) {
		t.Fatalf("transactions took %v records, want %d", sum, len(recs))
	}
	if avg := sum / float64(n); avg < maxRecords/2 {
		t.Errorf("%d transactions of %.0f records on average, want at least %d (half of max_records)", n, avg, maxRecords/2)
	}
	t.Logf("%d transactions, %.0f records on average, max_records %d", n, sum/float64(n), maxRecords)
	// The batch log says the same: the entries one transaction wrote
	// share its xmin.
	if got := e.count("SELECT count(DISTINCT xmin::text) FROM idemsink.batches"); got != int(n) {
		t.Errorf("batch log entries from %d transactions, the metric counts %d", got, n)
	}

	// Every date's rows.
	if got := e.count("SELECT count(DISTINCT ts::date) FROM items"); got != dates {
		t.Errorf("rows of %d dates, want %d", got, dates)
	}
	if got := e.count("SELECT count(*) FROM items"); got != keys {
		t.Errorf("%d rows, want %d", got, keys)
	}
	if got := e.count("SELECT count(*) FROM items WHERE status = 'updated'"); got != updates {
		t.Errorf("%d rows updated, want %d", got, updates)
	}
	// Every date's batch-log entries: its records, its run id, and the
	// rows it wrote (each key inserted once, in its date's entry).
	rows, err := e.pool.Query(context.Background(), `SELECT target_date::text, run_id::text, sum(records), sum(inserted),
  sum(superseded + skipped + staged + deleted + dead_lettered)
FROM idemsink.batches WHERE pipeline = 'p' GROUP BY 1, 2 ORDER BY 1`)
	if err != nil {
		t.Fatal(err)
	}
	seen := 0
	for rows.Next() {
		var d, run string
		var records, inserted, accounted int
		if err := rows.Scan(&d, &run, &records, &inserted, &accounted); err != nil {
			t.Fatal(err)
		}
		seen++
		date, err := record.ParseDate(d)
		if err != nil {
			t.Fatalf("batch log date %q: %v", d, err)
		}
		if want := uuidString(batch.RunID("p", date)); run != want {
			t.Errorf("%s: run id %s, want %s", d, run, want)
		}
		want := perDate[d]
		if records != want || accounted != want {
			t.Errorf("%s: %d records in the batch log, %d accounted for; want %d", d, records, accounted, want)
		}
		if inserted != keys/dates {
			t.Errorf("%s: %d inserted, want %d", d, inserted, keys/dates)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if seen != dates {
		t.Errorf("batch log has %d dates, want %d", seen, dates)
	}
}

func histogramSum(t *testing.T, mb *member, name string) float64 {
	t.Helper()
	s, _ := histogram(t, mb, name)
	return s
}

func histogramCount(t *testing.T, mb *member, name string) uint64 {
	t.Helper()
	_, n := histogram(t, mb, name)
	return n
}

// histogram returns the sample sum and count of one of mb's transaction
// histograms, over every label value.
func histogram(t *testing.T, mb *member, name string) (float64, uint64) {
	t.Helper()
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(mb.m.TransactionRecords, mb.m.TransactionDates)
	families, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var sum float64
	var n uint64
	for _, f := range families {
		if f.GetName() != name {
			continue
		}
		for _, m := range f.GetMetric() {
			sum += m.GetHistogram().GetSampleSum()
			n += m.GetHistogram().GetSampleCount()
		}
	}
	return sum, n
}
