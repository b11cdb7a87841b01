// Package torture holds the oracle of the torture tests: from the log the
// tests produced, and from nothing else, it computes what the target table
// must hold and accounts for every record.
//
// It shares no code with the pipeline on purpose. It decodes the order-line
// JSON itself, strictly (a field of the wrong JSON type makes the record
// malformed), and orders versions of a key itself, by version, then Kafka
// offset, then partition (docs/design.md, contract 3). Only the tests import it.
package torture

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"regexp"
	"slices"
	"strings"
	"time"
)

// Record is one record as Kafka stored it: where, and the raw bytes.
type Record struct {
	Partition int32
	Offset    int64
	Key       []byte
	Value     []byte // nil: a tombstone
}

// Pos is a record's position in the scenario's one topic.
type Pos struct {
	Partition int32
	Offset    int64
}

func (p Pos) String() string { return fmt.Sprintf("%d@%d", p.Partition, p.Offset) }

// Key identifies an order line.
type Key struct {
	OrderID int64
	LineNo  int32
}

func (k Key) String() string { return fmt.Sprintf("%d/%d", k.OrderID, k.LineNo) }

// Line is an order line's content, as an event carries it and as the
// target table must hold it.
type Line struct {
	OrderID    int64
	LineNo     int32
	SKU        string
	Quantity   int32
	UnitPrice  string // numeric, as PostgreSQL prints it
	Currency   string
	CustomerID int64
	Status     string
	Store      string
	EventTime  time.Time
	Version    int64
}

// Key returns the line's key.
func (l Line) Key() Key { return Key{l.OrderID, l.LineNo} }

// Equal compares content: times as instants, prices as numbers (a numeric
// column may keep 189.60 as 189.6).
func (l Line) Equal(o Line) bool {
	a, b := l, o
	a.EventTime, b.EventTime = time.Time{}, time.Time{}
	a.UnitPrice, b.UnitPrice = "", ""
	return a == b && l.EventTime.Equal(o.EventTime) && sameNumber(l.UnitPrice, o.UnitPrice)
}

func sameNumber(a, b string) bool {
	x, okx := new(big.Rat).SetString(a)
	y, oky := new(big.Rat).SetString(b)
	return okx && oky && x.Cmp(y) == 0
}

func (l Line) String() string {
	return fmt.Sprintf("%s v%d %s %s x%d @%s %s %d %s %s", l.Key(), l.Version, l.Status, l.SKU, l.Quantity,
		l.UnitPrice, l.Currency, l.CustomerID, l.Store, l.EventTime.UTC().Format(time.RFC3339))
}

// Row is a row read back from the target table.
type Row struct {
	Line
	// StoredVersion is the table's _version column; it must equal the
	// line's version field, which is the pipeline's version field.
	StoredVersion int64
}

var decimalRE = regexp.MustCompile(`^-?[0-9]+(\.[0-9]+)?$`)

// Parse decodes an order-line event strictly: every field present, not
// null, of the JSON type the producer writes. Anything else is malformed.
func Parse(value []byte) (Line, error) {
	if value == nil {
		return Line{}, fmt.Errorf("tombstone")
	}
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(value))
	dec.UseNumber()
	if err := dec.Decode(&raw); err != nil {
		return Line{}, fmt.Errorf("not a JSON object: %w", err)
	}
	if raw == nil {
		return Line{}, fmt.Errorf("not a JSON object")
	}
	var l Line
	var errs []string
	field := func(name string, dst any) {
		v, ok := raw[name]
		if !ok || string(v) == "null" {
			errs = append(errs, name+" missing")
			return
		}
		d := json.NewDecoder(bytes.NewReader(v))
		d.UseNumber()
		if err := d.Decode(dst); err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", name, err))
		}
	}
	var when string
	field("order_id", &l.OrderID)
	field("line_no", &l.LineNo)
	field("sku", &l.SKU)
	field("quantity", &l.Quantity)
	field("unit_price", &l.UnitPrice)
	field("currency", &l.Currency)
	field("customer_id", &l.CustomerID)
	field("status", &l.Status)
	field("store", &l.Store)
	field("event_time", &when)
	field("version", &l.Version)
	if len(errs) > 0 {
		return Line{}, fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	if !decimalRE.MatchString(l.UnitPrice) {
		return Line{}, fmt.Errorf("unit_price %q is not a decimal", l.UnitPrice)
	}
	t, err := time.Parse(time.RFC3339Nano, when)
	if err != nil {
		return Line{}, fmt.Errorf("event_time: %w", err)
	}
	l.EventTime = t
	return l, nil
}

// ParseTombstoneKey reads the key of a tombstone as the scenarios write it
// for a pipeline with deletes: apply: a JSON object with order_id, line_no
// and the delete's version (a versioned pipeline orders a delete by it).
func ParseTombstoneKey(key []byte) (Line, error) {
	var k struct {
		OrderID *int64 `json:"order_id"`
		LineNo  *int32 `json:"line_no"`
		Version *int64 `json:"version"`
	}
	if err := json.Unmarshal(key, &k); err != nil {
		return Line{}, fmt.Errorf("tombstone key: %w", err)
	}
	if k.OrderID == nil || k.LineNo == nil || k.Version == nil {
		return Line{}, fmt.Errorf("tombstone key %q: order_id, line_no or version missing", key)
	}
	return Line{OrderID: *k.OrderID, LineNo: *k.LineNo, Version: *k.Version}, nil
}

// Oracle knows the expected outcome of a produced log.
type Oracle struct {
	records []Record
	lines   []*Line // by record; nil when malformed; for a delete, its key and version
	deletes []bool  // by record: a tombstone applied as a delete
	why     []string
}

// New parses the log. Records may come in any order. A tombstone is
// malformed, as under the default deletes: dead_letter.
func New(log []Record) *Oracle { return newOracle(log, false) }

// NewDeleting is New for a pipeline with deletes: apply: a tombstone
// deletes its key under the version guard (ParseTombstoneKey), so the
// newest record of a key may be a delete, and then the key has no row.
func NewDeleting(log []Record) *Oracle { return newOracle(log, true) }

func newOracle(log []Record, deletes bool) *Oracle {
	o := &Oracle{records: slices.Clone(log)}
	slices.SortFunc(o.records, func(a, b Record) int {
		if a.Partition != b.Partition {
			return int(a.Partition - b.Partition)
		}
		return int(a.Offset - b.Offset)
	})
	o.lines = make([]*Line, len(o.records))
	o.deletes = make([]bool, len(o.records))
	o.why = make([]string, len(o.records))
	for i, r := range o.records {
		var l Line
		var err error
		if r.Value == nil && deletes {
			l, err = ParseTombstoneKey(r.Key)
			o.deletes[i] = err == nil
		} else {
			l, err = Parse(r.Value)
		}
		if err != nil {
			o.why[i] = err.Error()
			continue
		}
		o.lines[i] = &l
	}
	return o
}

// newer reports whether record i supersedes record j of the same key.
func (o *Oracle) newer(i, j int) bool {
	a, b := o.lines[i], o.lines[j]
	if a.Version != b.Version {
		return a.Version > b.Version
	}
	ra, rb := o.records[i], o.records[j]
	if ra.Offset != rb.Offset {
		return ra.Offset > rb.Offset
	}
	return ra.Partition > rb.Partition
}

// winners returns, per key, the index of the newest record.
func (o *Oracle) winners() map[Key]int {
	w := map[Key]int{}
	for i, l := range o.lines {
		if l == nil {
			continue
		}
		if j, ok := w[l.Key()]; !ok || o.newer(i, j) {
			w[l.Key()] = i
		}
	}
	return w
}

// Expected returns the table the log must leave: the newest line per key,
// unless the newest record of the key is a delete.
func (o *Oracle) Expected() map[Key]Line {
	out := map[Key]Line{}
	for k, i := range o.winners() {
		if !o.deletes[i] {
			out[k] = *o.lines[i]
		}
	}
	return out
}

// Malformed returns the positions of the records that must be dead-lettered.
func (o *Oracle) Malformed() map[Pos]string {
	out := map[Pos]string{}
	for i, l := range o.lines {
		if l == nil {
			out[Pos{o.records[i].Partition, o.records[i].Offset}] = o.why[i]
		}
	}
	return out
}

// Ends returns, per partition, the offset after the last record of the log.
func (o *Oracle) Ends() map[int32]int64 {
	out := map[int32]int64{}
	for _, r := range o.records {
		out[r.Partition] = max(out[r.Partition], r.Offset+1)
	}
	return out
}

// Len is the number of records in the log.
func (o *Oracle) Len() int { return len(o.records) }

// Observed is what a scenario left behind, read from PostgreSQL.
type Observed struct {
	Rows []Row
	// Dead holds the dead letters' positions and reasons.
	Dead map[Pos]string
	// Applied is the ledger's applied offset per partition (-1 or absent:
	// nothing applied).
	Applied map[int32]int64
}

// Report accounts for every produced record.
type Report struct {
	Produced   int
	Applied    int // the newest record of its key (or an exact copy of it), and the table holds it
	Superseded int // an older version or a stale replay of a key the table holds correctly (or correctly lacks)
	Deleted    int // a delete that is the newest record of its key, and the table lacks the key
	Dead       int // malformed and dead-lettered
	Lost       int // not accounted for: its key is missing, or it was not dead-lettered, or the ledger never reached it
	Duplicated int // keys held by more than one row
	Wrong      int // rows that differ from the oracle, rows of no produced key, well-formed records dead-lettered
	Problems   []string
}

// OK reports whether nothing was lost, duplicated or wrong.
func (r Report) OK() bool { return r.Lost == 0 && r.Duplicated == 0 && r.Wrong == 0 }

func (r Report) String() string {
	return fmt.Sprintf("produced=%d applied=%d superseded=%d deleted=%d dead=%d lost=%d duplicated=%d wrong=%d",
		r.Produced, r.Applied, r.Superseded, r.Deleted, r.Dead, r.Lost, r.Duplicated, r.Wrong)
}

const maxProblems = 20

func (r *Report) problem(format string, args ...any) {
	if len(r.Problems) < maxProblems {
		r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
	}
}

// Check compares a scenario's outcome with the log. It expects the ledger
// to have caught up with the log: a record beyond the applied offset is
// counted as lost, since the scenario is over and nothing will apply it.
func (o *Oracle) Check(obs Observed) Report {
	rep := Report{Produced: len(o.records)}
	want := o.winners()

	table := map[Key]Row{}
	rows := map[Key]int{}
	for _, r := range obs.Rows {
		k := r.Key()
		rows[k]++
		table[k] = r
	}
	for _, k := range slices.SortedFunc(maps.Keys(rows), cmpKey) {
		if rows[k] > 1 {
			rep.Duplicated++
			rep.problem("key %s: %d rows", k, rows[k])
		}
	}
	for _, k := range slices.SortedFunc(maps.Keys(table), cmpKey) {
		r := table[k]
		i, ok := want[k]
		switch {
		case !ok:
			rep.Wrong++
			rep.problem("row %s: no record of the log has this key", r.Line)
		case o.deletes[i]:
			rep.Wrong++
			rep.problem("row %s: deleted by record %s (version %d)", r.Line, Pos{o.records[i].Partition, o.records[i].Offset}, o.lines[i].Version)
		case !r.Equal(*o.lines[i]):
			rep.Wrong++
			rep.problem("row %s: want %s (record %s)", r.Line, *o.lines[i], Pos{o.records[i].Partition, o.records[i].Offset})
		case r.StoredVersion != r.Version:
			rep.Wrong++
			rep.problem("row %s: _version %d", r.Line, r.StoredVersion)
		}
	}

	positions := map[Pos]bool{}
	for i, rec := range o.records {
		pos := Pos{rec.Partition, rec.Offset}
		positions[pos] = true
		reason, dead := obs.Dead[pos]
		if a, ok := obs.Applied[rec.Partition]; !ok || rec.Offset > a {
			rep.Lost++
			rep.problem("record %s: beyond the ledger's applied offset %d", pos, a)
			continue
		}
		l := o.lines[i]
		if l == nil {
			if dead {
				rep.Dead++
			} else {
				rep.Lost++
				rep.problem("record %s (%s): malformed but not dead-lettered", pos, o.why[i])
			}
			continue
		}
		if dead {
			rep.Wrong++
			rep.problem("record %s (%s): well-formed but dead-lettered: %s", pos, l.Key(), reason)
			continue
		}
		r, ok := table[l.Key()]
		w := want[l.Key()]
		switch {
		case o.deletes[w]:
			// The key must be gone; a row of it is counted as wrong above.
			if !ok && w == i {
				rep.Deleted++
			} else if !ok {
				rep.Superseded++
			}
		case o.deletes[i]:
			// A delete older than the key's newest line.
			if ok && r.Equal(*o.lines[w]) {
				rep.Superseded++
			} else if !ok {
				rep.Lost++
				rep.problem("record %s (delete of %s): the key's newer line is not in the table", pos, l.Key())
			}
		case !ok:
			rep.Lost++
			rep.problem("record %s (%s): its key is not in the table", pos, l)
		case !r.Equal(*o.lines[want[l.Key()]]):
			// Counted once, as a wrong row, above.
		case want[l.Key()] == i || l.Equal(*o.lines[want[l.Key()]]):
			rep.Applied++
		default:
			rep.Superseded++
		}
	}
	for _, p := range slices.SortedFunc(maps.Keys(obs.Dead), cmpPos) {
		if !positions[p] {
			rep.Wrong++
			rep.problem("dead letter at %s: no record of the log is there", p)
		}
	}
	return rep
}

func cmpKey(a, b Key) int {
	if a.OrderID != b.OrderID {
		if a.OrderID < b.OrderID {
			return -1
		}
		return 1
	}
	return int(a.LineNo - b.LineNo)
}

func cmpPos(a, b Pos) int {
	if a.Partition != b.Partition {
		return int(a.Partition - b.Partition)
	}
	if a.Offset < b.Offset {
		return -1
	}
	if a.Offset > b.Offset {
		return 1
	}
	return 0
}
