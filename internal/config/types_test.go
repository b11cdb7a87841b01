package config

import (
	"fmt"
	"testing"
)

// TestParseType pins each accepted spelling to its canonical form and to
// the name format_type gives it, which is what a pre-created table shows.
func TestParseType(t *testing.T) {
	for _, tc := range []struct{ in, canon, catalog string }{
		{"text", "text", "text"},
		{"TEXT", "text", "text"},
		{"bigint", "bigint", "bigint"},
		{"int8", "bigint", "bigint"},
		{"double precision", "double precision", "double precision"},
		{"numeric", "numeric", "numeric"},
		{"numeric(12,2)", "numeric(12,2)", "numeric(12,2)"},
		{"numeric( 12 , 2 )", "numeric(12,2)", "numeric(12,2)"},
		{"decimal(12)", "numeric(12,0)", "numeric(12,0)"},
		{"numeric(3,5)", "numeric(3,5)", "numeric(3,5)"},
		{"numeric(2,-3)", "numeric(2,-3)", "numeric(2,-3)"},
		{"varchar", "varchar", "character varying"},
		{"varchar(40)", "varchar(40)", "character varying(40)"},
		{"character varying(40)", "varchar(40)", "character varying(40)"},
		{"char(3)", "char(3)", "character(3)"},
		{"character(3)", "char(3)", "character(3)"},
		{"timestamptz", "timestamptz", "timestamp with time zone"},
		{"timestamp with time zone", "timestamptz", "timestamp with time zone"},
		{"timestamptz(3)", "timestamptz(3)", "timestamp(3) with time zone"},
		{"timestamp(0) with time zone", "timestamptz(0)", "timestamp(0) with time zone"},
		{"timestamp", "timestamp", "timestamp without time zone"},
		{"timestamp(6)", "timestamp(6)", "timestamp(6) without time zone"},
		{"timestamp(3) without time zone", "timestamp(3)", "timestamp(3) without time zone"},
		{"time", "time", "time without time zone"},
		{"time(0) without time zone", "time(0)", "time(0) without time zone"},
		{"real", "real", "real"},
		{"float4", "real", "real"},
		{"bytea", "bytea", "bytea"},
	} {
		ct, err := ParseType(tc.in)
		if err != nil {
			t.Errorf("ParseType(%q): %v", tc.in, err)
			continue
		}
		if ct.String() != tc.canon || ct.Catalog() != tc.catalog {
			t.Errorf("ParseType(%q) = %q / %q, want %q / %q", tc.in, ct, ct.Catalog(), tc.canon, tc.catalog)
		}
		again, err := ParseType(ct.String())
		if err != nil || again != ct {
			t.Errorf("ParseType(%q) does not round-trip: %+v, %v", ct, again, err)
		}
	}
}

// max_record_bytes defaults to 1 MiB, or to max_buffered_bytes when that is
// smaller, so that a small buffer alone is never an invalid configuration.
func TestMaxRecordBytesDefault(t *testing.T) {
	const base = "brokers: [k:9092]\ngroup: g\ndatabase_url: postgres://x\n%spipelines:\n  - {name: p, topics: [t], table: t, key: [id], columns: [{name: id, type: bigint}], date: {field: ts}}\n"
	for _, tc := range []struct {
		extra string
		want  ByteSize
	}{
		{"", 1 << 20},
		{"max_buffered_bytes: 512KiB\n", 512 << 10},
	} {
		c, err := Parse(fmt.Appendf(nil, base, tc.extra), nil)
		if err != nil {
			t.Fatalf("%q: %v", tc.extra, err)
		}
		if got := c.Pipelines[0].MaxRecordBytes; got != tc.want {
			t.Errorf("%q: max_record_bytes %d, want %d", tc.extra, got, tc.want)
		}
	}
}
