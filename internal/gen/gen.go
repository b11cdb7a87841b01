// Package gen generates order-line events for the demo, the torture tests
// and the benchmarks: realistic JSON with duplicates, updates, late records
// and stale replays, deterministic for a seed.
package gen

import (
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"time"

	"github.com/idemsink/idemsink/internal/config"
)

// Line is one order-line event as produced to Kafka.
type Line struct {
	OrderID    int64     `json:"order_id"`
	LineNo     int32     `json:"line_no"`
	SKU        string    `json:"sku"`
	Quantity   int32     `json:"quantity"`
	UnitPrice  string    `json:"unit_price"`
	Currency   string    `json:"currency"`
	CustomerID int64     `json:"customer_id"`
	Status     string    `json:"status"`
	Store      string    `json:"store"`
	EventTime  time.Time `json:"event_time"`
	Version    int64     `json:"version"`
}

// Key identifies a line: the pipeline's key columns.
type Key struct {
	OrderID int64
	LineNo  int32
}

// Kind says why an event was generated.
type Kind int

// Kinds of events.
const (
	Fresh     Kind = iota // first event of a key
	Update                // a newer version with other content
	Duplicate             // the latest event of a key, sent again
	Stale                 // an older version of a key, sent again (a replay)
)

func (k Kind) String() string { return [...]string{"new", "update", "duplicate", "stale"}[k] }

// Event is a generated event and its JSON encoding.
type Event struct {
	Line  Line
	Kind  Kind
	Value []byte
}

// Key returns the event's key.
func (e Event) Key() Key { return Key{e.Line.OrderID, e.Line.LineNo} }

// Options shapes the generated log.
type Options struct {
	Seed uint64
	// FirstOrder numbers the keys; generators with disjoint ranges never
	// share a key.
	FirstOrder int64
	// Day is the first target date (local midnight in Europe/Berlin);
	// events spread over Days days.
	Day  time.Time
	Days int
	// Rates are the chances, per event after the first of a key, of an
	// update, a duplicate or a stale replay; the rest are new keys.
	UpdateRate, DupRate, StaleRate float64
	// LateRate is the chance that an event's time lies days behind the
	// current day, so that it lands in an earlier target date's batch.
	LateRate float64
	// WideRate is the chance that a new key's time lies anywhere in the
	// WideDays days before Day (730 if unset): old orders, as in the CDC
	// of a table dated by its order date, whose updates then touch dates
	// spread over two years.
	WideRate float64
	WideDays int
}

// Zone is the time zone of the orders' target dates.
const Zone = "Europe/Berlin"

// Generator produces events; it remembers every version of every key.
type Generator struct {
	o        Options
	rng      *rand.Rand
	keys     []Key
	versions map[Key][]Line
	next     int64
	n        int
}

// New returns a generator.
func New(o Options) *Generator {
	if o.Days == 0 {
		o.Days = 3
	}
	if o.WideDays == 0 {
		o.WideDays = 730
	}
	if o.Day.IsZero() {
		loc, _ := time.LoadLocation(Zone)
		o.Day = time.Date(2026, 3, 28, 0, 0, 0, 0, loc) // spans the spring DST change
	}
	return &Generator{o: o, rng: rand.New(rand.NewPCG(o.Seed, o.Seed^0x9e3779b97f4a7c15)), versions: map[Key][]Line{}, next: o.FirstOrder}
}

var (
	skus     = []string{"SKU-1001", "SKU-1002", "SKU-2040", "SKU-3300", "SKU-4711", "SKU-5150", "SKU-6060", "SKU-7007"}
	statuses = []string{"placed", "paid", "packed", "shipped", "delivered"}
	stores   = []string{"berlin-mitte", "hamburg", "muenchen", "koeln", "online"}
)

// Next returns the next event.
func (g *Generator) Next() Event {
	g.n++
	r := g.rng.Float64()
	o := g.o
	if len(g.keys) > 0 {
		switch {
		case r < o.UpdateRate:
			return g.update()
		case r < o.UpdateRate+o.DupRate:
			k := g.keys[g.rng.IntN(len(g.keys))]
			vs := g.versions[k]
			return g.event(vs[len(vs)-1], Duplicate)
		case r < o.UpdateRate+o.DupRate+o.StaleRate:
			k := g.keys[g.rng.IntN(len(g.keys))]
			vs := g.versions[k]
			if len(vs) > 1 {
				return g.event(vs[g.rng.IntN(len(vs)-1)], Stale)
			}
			return g.update()
		}
	}
	return g.fresh()
}

// NextNew returns an event for a key never seen before.
func (g *Generator) NextNew() Event { g.n++; return g.fresh() }

// NextUpdate returns a newer version of a random existing key.
func (g *Generator) NextUpdate() Event { g.n++; return g.update() }

func (g *Generator) fresh() Event {
	k := Key{OrderID: g.next/4 + 1, LineNo: int32(g.next%4) + 1}
	g.next++
	l := Line{
		OrderID: k.OrderID, LineNo: k.LineNo,
		SKU:        skus[g.rng.IntN(len(skus))],
		Quantity:   int32(1 + g.rng.IntN(9)),
		UnitPrice:  fmt.Sprintf("%d.%02d", 1+g.rng.IntN(199), g.rng.IntN(100)),
		Currency:   "EUR",
		CustomerID: 10000 + g.rng.Int64N(5000),
		Status:     statuses[0],
		Store:      stores[g.rng.IntN(len(stores))],
		EventTime:  g.time(),
		Version:    1,
	}
	g.keys = append(g.keys, k)
	g.versions[k] = []Line{l}
	return g.event(l, Fresh)
}

func (g *Generator) update() Event {
	k := g.keys[g.rng.IntN(len(g.keys))]
	vs := g.versions[k]
	l := vs[len(vs)-1]
	l.Version++
	l.Quantity = int32(1 + g.rng.IntN(9))
	l.Status = statuses[min(len(statuses)-1, int(l.Version)-1)]
	g.versions[k] = append(vs, l)
	return g.event(l, Update)
}

// time spreads events over the days, mostly in order, with late ones,
// and a share over the wide window before them.
func (g *Generator) time() time.Time {
	o := g.o
	if o.WideRate > 0 && g.rng.Float64() < o.WideRate {
		return o.Day.AddDate(0, 0, -1-g.rng.IntN(o.WideDays)).Add(time.Duration(g.rng.IntN(86400)) * time.Second).UTC()
	}
	day := g.rng.IntN(o.Days)
	if g.rng.Float64() < o.LateRate && day > 0 {
		day = g.rng.IntN(day)
	}
	sec := g.rng.IntN(86400)
	return o.Day.AddDate(0, 0, day).Add(time.Duration(sec) * time.Second).UTC()
}

func (g *Generator) event(l Line, kind Kind) Event {
	v, err := json.Marshal(l)
	if err != nil {
		panic(err) // a Line always encodes
	}
	return Event{Line: l, Kind: kind, Value: v}
}

// Latest returns the newest version of every key generated so far: the
// expected content of the target table under the ordering contract (docs/design.md, contract 3),
// computed without any of the pipeline's code.
func (g *Generator) Latest() map[Key]Line {
	out := make(map[Key]Line, len(g.versions))
	for k, vs := range g.versions {
		out[k] = vs[len(vs)-1]
	}
	return out
}

// Pipeline returns the pipeline configuration for order lines.
func Pipeline(name, topic, table string) config.Pipeline {
	return config.Pipeline{
		Name: name, Topics: []string{topic}, Schema: "public", Table: table,
		Key: []string{"order_id", "line_no"},
		Columns: []config.Column{
			{Name: "order_id", Type: "bigint"},
			{Name: "line_no", Type: "integer"},
			{Name: "sku", Type: "text"},
			{Name: "quantity", Type: "integer"},
			{Name: "unit_price", Type: "numeric"},
			{Name: "currency", Type: "text"},
			{Name: "customer_id", Type: "bigint"},
			{Name: "status", Type: "text"},
			{Name: "store", Type: "text"},
			{Name: "event_time", Type: "timestamptz"},
			{Name: "version", Type: "bigint"},
		},
		Date:    config.Date{Field: "event_time", TimeZone: Zone},
		Version: &config.Version{Field: "version", Type: "bigint"},
	}
}

// KafkaKey is the record key the generator's events are produced with, so
// that every version of a key lands in one partition.
func KafkaKey(k Key) []byte {
	return []byte(strconv.FormatInt(k.OrderID, 10) + "-" + strconv.Itoa(int(k.LineNo)))
}
