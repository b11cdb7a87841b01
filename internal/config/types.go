package config

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// ColumnType is a column's PostgreSQL type with its modifiers, parsed from
// the configuration: numeric(12,2), varchar(40), char(3), timestamptz(3).
// The decoder checks values against it before the database would refuse or,
// worse, silently round or pad them.
type ColumnType struct {
	// Base is one of ColumnTypes, or varchar or char.
	Base string
	// Length is the character limit of varchar(n) and char(n); 0 is none.
	Length int
	// Precision and Scale are numeric(p,s)'s modifiers, and Precision is
	// the fractional digits of timestamptz(p), timestamp(p) and time(p);
	// HasPrecision says they are set.
	Precision, Scale int
	HasPrecision     bool
}

// PostgreSQL's limits on type modifiers.
const (
	MaxNumericPrecision   = 1000
	MinNumericScale       = -1000
	MaxNumericScale       = 1000
	MaxCharLength         = 10485760
	MaxTimestampPrecision = 6
)

// typeRE splits a type into its name and its parenthesised modifiers, and
// takes the "with time zone" suffix format_type puts after them.
var typeRE = regexp.MustCompile(`^([a-z][a-z0-9 ]*?)\s*(?:\(\s*([-+]?\d+)\s*(?:,\s*([-+]?\d+)\s*)?\))?(\s+with(?:out)? time zone)?$`)

// typeAliases maps the other spellings PostgreSQL (and format_type, so
// that a type can be pasted from psql's \d) gives a base type.
var typeAliases = map[string]string{
	"character varying": "varchar",
	"character":         "char",
	"bpchar":            "char",
	"decimal":           "numeric",
	"int8":              "bigint",
	"int":               "integer",
	"int4":              "integer",
	"int2":              "smallint",
	"float8":            "double precision",
	"bool":              "boolean",
	"float4":            "real",
	"timestamp":         "timestamp", // timestamptz with "with time zone", below
	"time":              "time",
}

// ParseType parses a configured column type. Modifiers are checked against
// the limits PostgreSQL enforces, so that a bad one is a config error, not
// a failed CREATE TABLE.
func ParseType(s string) (ColumnType, error) {
	m := typeRE.FindStringSubmatch(strings.ToLower(strings.TrimSpace(s)))
	if m == nil {
		return ColumnType{}, fmt.Errorf("%q is not a type like numeric(12,2) or varchar(40)", s)
	}
	name, a1, a2, zone := strings.Join(strings.Fields(m[1]), " "), m[2], m[3], strings.TrimSpace(m[4])
	if alias, ok := typeAliases[name]; ok {
		name = alias
	}
	switch {
	case zone == "with time zone" && name == "timestamp":
		name = "timestamptz"
	case zone == "with time zone" && name == "time":
		return ColumnType{}, fmt.Errorf("%q: time with time zone is not supported; use time or timestamptz", s)
	case zone != "" && name != "timestamp" && name != "time" && !(zone == "with time zone" && name == "timestamptz"):
		return ColumnType{}, fmt.Errorf("%q is not a type like numeric(12,2) or varchar(40)", s)
	}
	t := ColumnType{Base: name}
	known := name == "varchar" || name == "char"
	for _, b := range ColumnTypes {
		known = known || b == name
	}
	if !known {
		return t, fmt.Errorf("%q is not one of %s, varchar(n), char(n)", s, strings.Join(ColumnTypes, ", "))
	}
	var n1, n2 int
	if a1 != "" {
		n1, _ = strconv.Atoi(a1)
	}
	if a2 != "" {
		n2, _ = strconv.Atoi(a2)
	}
	switch {
	case name == "varchar" || name == "char":
		if a2 != "" {
			return t, fmt.Errorf("%q: %s takes one modifier, a length", s, name)
		}
		if a1 == "" && name == "char" {
			return t, fmt.Errorf("%q: give char a length, as char(n); PostgreSQL's bare char is char(1)", s)
		}
		if a1 != "" && (n1 < 1 || n1 > MaxCharLength) {
			return t, fmt.Errorf("%q: length must be between 1 and %d", s, MaxCharLength)
		}
		t.Length = n1
	case name == "numeric":
		if a1 == "" {
			break
		}
		if n1 < 1 || n1 > MaxNumericPrecision {
			return t, fmt.Errorf("%q: precision must be between 1 and %d", s, MaxNumericPrecision)
		}
		if n2 < MinNumericScale || n2 > MaxNumericScale {
			return t, fmt.Errorf("%q: scale must be between %d and %d", s, MinNumericScale, MaxNumericScale)
		}
		t.Precision, t.Scale, t.HasPrecision = n1, n2, true
	case name == "timestamptz" || name == "timestamp" || name == "time":
		if a2 != "" {
			return t, fmt.Errorf("%q: %s takes one modifier, its fractional digits", s, name)
		}
		if a1 == "" {
			break
		}
		if n1 < 0 || n1 > MaxTimestampPrecision {
			return t, fmt.Errorf("%q: precision must be between 0 and %d", s, MaxTimestampPrecision)
		}
		t.Precision, t.HasPrecision = n1, true
	default:
		if a1 != "" {
			return t, fmt.Errorf("%q: %s takes no modifiers", s, name)
		}
	}
	return t, nil
}

// String is the type's canonical spelling, valid SQL: what the
// configuration is normalized to and what target tables are created with.
func (t ColumnType) String() string {
	switch {
	case (t.Base == "varchar" || t.Base == "char") && t.Length > 0:
		return fmt.Sprintf("%s(%d)", t.Base, t.Length)
	case t.Base == "numeric" && t.HasPrecision:
		return fmt.Sprintf("numeric(%d,%d)", t.Precision, t.Scale)
	case (t.Base == "timestamptz" || t.Base == "timestamp" || t.Base == "time") && t.HasPrecision:
		return fmt.Sprintf("%s(%d)", t.Base, t.Precision)
	}
	return t.Base
}

// Catalog is the name PostgreSQL's format_type gives the type, to match a
// pre-created table's column against the configuration.
func (t ColumnType) Catalog() string {
	switch t.Base {
	case "varchar":
		if t.Length > 0 {
			return fmt.Sprintf("character varying(%d)", t.Length)
		}
		return "character varying"
	case "char":
		return fmt.Sprintf("character(%d)", t.Length)
	case "timestamptz":
		if t.HasPrecision {
			return fmt.Sprintf("timestamp(%d) with time zone", t.Precision)
		}
		return "timestamp with time zone"
	case "timestamp", "time":
		if t.HasPrecision {
			return fmt.Sprintf("%s(%d) without time zone", t.Base, t.Precision)
		}
		return t.Base + " without time zone"
	}
	return t.String()
}

// Typ returns the column's parsed type; Validate has checked it parses.
func (c *Column) Typ() ColumnType {
	t, err := ParseType(c.Type)
	if err != nil {
		return ColumnType{Base: c.Type}
	}
	return t
}

// SemanticTypes are the Kafka Connect and Debezium semantic types a
// column's semantic_type may name, each with the column types it is read
// into. Without a schema envelope an event carries bare numbers and
// strings; the semantic type says what they mean, so that no unit is ever
// guessed: a date as days since the epoch, a timestamp as epoch milli-,
// micro- or nanoseconds, a time as milli-, micro- or nanoseconds since
// midnight, JSON as a string, a decimal as base64 of its unscaled value.
var SemanticTypes = map[string][]string{
	"io.debezium.time.Date":                   {"date"},
	"org.apache.kafka.connect.data.Date":      {"date"},
	"io.debezium.time.Timestamp":              {"timestamp", "timestamptz"},
	"io.debezium.time.MicroTimestamp":         {"timestamp", "timestamptz"},
	"io.debezium.time.NanoTimestamp":          {"timestamp", "timestamptz"},
	"org.apache.kafka.connect.data.Timestamp": {"timestamp", "timestamptz"},
	"io.debezium.time.Time":                   {"time"},
	"io.debezium.time.MicroTime":              {"time"},
	"io.debezium.time.NanoTime":               {"time"},
	"org.apache.kafka.connect.data.Time":      {"time"},
	"io.debezium.data.Json":                   {"jsonb"},
	"org.apache.kafka.connect.data.Decimal":   {"numeric"},
	"io.debezium.data.VariableScaleDecimal":   {"numeric"},
}

func semanticNames() []string {
	names := make([]string, 0, len(SemanticTypes))
	for n := range SemanticTypes {
		names = append(names, n)
	}
	slices.Sort(names)
	return names
}
