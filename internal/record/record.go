// Package record holds the types every layer of idemsink shares: where a
// record sits in Kafka (TP, Position), its target date (Date), its identity
// (ID, RecordID), the decoded row ready to stage (Row), and the dead letter
// of a record that cannot be applied, with the classes of bad input
// (DeadLetter, BadRecord, Classes).
//
// The package decides nothing: decode fills these types, batch groups
// them, sink stores them, consume moves their positions.
package record

import (
	"fmt"
	"slices"
	"time"
)

// TP names a topic partition.
type TP struct {
	Topic     string
	Partition int32
}

func (tp TP) String() string { return fmt.Sprintf("%s/%d", tp.Topic, tp.Partition) }

// Position is where a record sits in Kafka.
type Position struct {
	TP
	Offset int64
}

// Date is a calendar date with no time zone: a record's target date.
type Date struct {
	Year  int
	Month time.Month
	Day   int
}

// DateOf returns t's calendar date in t's location.
func DateOf(t time.Time) Date {
	y, m, d := t.Date()
	return Date{y, m, d}
}

// IsZero reports whether d is the zero Date, used for records without one.
func (d Date) IsZero() bool { return d == Date{} }

func (d Date) String() string {
	if d.IsZero() {
		return "undated"
	}
	return fmt.Sprintf("%04d-%02d-%02d", d.Year, d.Month, d.Day)
}

// Time returns midnight UTC of d, the form pgx encodes as a PostgreSQL date.
func (d Date) Time() time.Time { return time.Date(d.Year, d.Month, d.Day, 0, 0, 0, 0, time.UTC) }

// ParseDate parses YYYY-MM-DD.
func ParseDate(s string) (Date, error) {
	t, err := time.Parse(time.DateOnly, s)
	if err != nil {
		return Date{}, err
	}
	return DateOf(t), nil
}

// Row is a decoded record, ready to stage.
type Row struct {
	ID ID
	// Values holds one value per pipeline column, in column order, typed
	// for pgx's binary encoding; nil is SQL NULL.
	Values []any
	// Version orders versions of one key: the version field, or 0.
	Version int64
	Pos     Position
	// Size is the length of the raw Kafka value.
	Size int
	// Key and Value are the raw Kafka key and value, kept so that a row the
	// database refuses can still be dead-lettered as it arrived.
	Key, Value []byte
	// Delete removes the key (Values is nil); Ignore changes nothing.
	// See format.go.
	Delete, Ignore bool
	// Unavailable lists, in order, the columns whose value the source
	// could not send (Debezium's placeholder for an unchanged TOAST
	// value): their Values are nil, and the stored value stays.
	Unavailable []int32
}

// Fill takes from an older row of the same key the values r could not
// carry (Unavailable), where o has them: what the key held before r.
func (r *Row) Fill(o *Row) {
	if len(r.Unavailable) == 0 || o.Delete || o.Ignore || o.Values == nil {
		return
	}
	kept := r.Unavailable[:0:0]
	for _, c := range r.Unavailable {
		if slices.Contains(o.Unavailable, c) {
			kept = append(kept, c)
			continue
		}
		r.Values[c] = o.Values[c]
	}
	r.Unavailable = kept
}

// Newer reports whether r supersedes o under the ordering contract (docs/design.md, contract 3): a higher
// version, else a later Kafka position. Positions in different partitions
// are not ordered by Kafka; comparing the offset, then the partition, then
// the topic (a pipeline may read several) makes the order total, so that the
// result never depends on delivery order.
func (r *Row) Newer(o *Row) bool {
	if r.Version != o.Version {
		return r.Version > o.Version
	}
	if r.Pos.Offset != o.Pos.Offset {
		return r.Pos.Offset > o.Pos.Offset
	}
	if r.Pos.Partition != o.Pos.Partition {
		return r.Pos.Partition > o.Pos.Partition
	}
	return r.Pos.Topic > o.Pos.Topic
}
