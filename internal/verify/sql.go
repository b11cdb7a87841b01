package verify

import (
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/idemsink/idemsink/internal/config"
)

// expectedTable is the temporary table that holds the newest record of
// each key on the dates reconciled, dropped with the transaction.
const expectedTable = "_idemsink_expected"

// statements holds the reconciliation's SQL for one pipeline, built from
// validated configuration with every identifier quoted. It is the only
// SQL of this package.
type statements struct {
	cols    []string
	create  string // the expected rows' table
	compare string // kind, key, topic, partition, offset of expected rows that do not match
	extra   string // key, record_id, version, topic, partition, offset of table rows on the dates ($1..$2, zone $3) not expected
	// deleteExtra deletes rows by record_id ($1) that are still at the
	// version and position ($2..$5) they were found extra at.
	deleteExtra string
}

func newStatements(p *config.Pipeline) statements {
	target := pgx.Identifier{p.Schema, p.Table}.Sanitize()
	var defs, tCols, eCols, tKey, eKey []string
	for i, col := range p.Columns {
		q := pgx.Identifier{col.Name}.Sanitize()
		defs = append(defs, q+" "+col.Type)
		// A column the newest record could not carry (Debezium's
		// placeholder for an unchanged TOAST value, with no older record
		// read to take it from) is not compared.
		tCols = append(tCols, "t."+q)
		eCols = append(eCols, fmt.Sprintf("CASE WHEN %d = ANY(e._unavailable) THEN t.%s ELSE e.%s END", i, q, q))
	}
	for _, k := range p.Key {
		q := pgx.Identifier{k}.Sanitize()
		tKey, eKey = append(tKey, "t."+q+"::text"), append(eKey, "e."+q+"::text")
	}
	s := statements{cols: append(append([]string{"record_id"}, p.ColumnNames()...), "_version", "_src_topic", "_src_partition", "_src_offset", "_unavailable")}
	s.create = fmt.Sprintf(`CREATE TEMP TABLE `+expectedTable+` (record_id uuid PRIMARY KEY, %s, _version bigint, _src_topic text, _src_partition integer, _src_offset bigint, _unavailable integer[]) ON COMMIT DROP`,
		strings.Join(defs, ", "))
	tContent := "(t._version, " + strings.Join(tCols, ", ") + ")"
	eContent := "(e._version, " + strings.Join(eCols, ", ") + ")"
	// A row may sit at an older position than the newest record with the
	// same content: the sink does not rewrite an unchanged row. Only a
	// different content is a mismatch; older or not says which kind.
	s.compare = fmt.Sprintf(`SELECT CASE WHEN t.record_id IS NULL THEN 'missing'
    WHEN (t._version, t._src_offset, t._src_partition, t._src_topic) < (e._version, e._src_offset, e._src_partition, e._src_topic) THEN 'older'
    ELSE 'differs' END,
  ARRAY[%s], e._src_topic, e._src_partition, e._src_offset
FROM `+expectedTable+` e LEFT JOIN %s t ON t.record_id = e.record_id
WHERE t.record_id IS NULL OR %s IS DISTINCT FROM %s
ORDER BY e._src_topic, e._src_partition, e._src_offset`, strings.Join(eKey, ", "), target, tContent, eContent)
	s.deleteExtra = fmt.Sprintf(`DELETE FROM %s t USING unnest($1::uuid[], $2::bigint[], $3::text[], $4::integer[], $5::bigint[]) AS x(id, v, topic, part, off)
WHERE t.record_id = x.id AND (t._version, t._src_topic, t._src_partition, t._src_offset) = (x.v, x.topic, x.part, x.off)`, target)
	if on := onDates(p); on != "" {
		s.extra = fmt.Sprintf(`SELECT ARRAY[%s], t.record_id, t._version, t._src_topic, t._src_partition, t._src_offset
FROM %s t WHERE %s AND NOT EXISTS (SELECT FROM `+expectedTable+` e WHERE e.record_id = t.record_id)
ORDER BY t._src_topic, t._src_partition, t._src_offset`, strings.Join(tKey, ", "), target, on)
	}
	return s
}

// onDates is the condition that a table row t falls on the target dates
// $1..$2 in zone $3: from the column that holds the date field, else from
// the batch that wrote the row.
func onDates(p *config.Pipeline) string {
	for _, col := range p.Columns {
		if col.Field != p.Date.Field {
			continue
		}
		q := "t." + pgx.Identifier{col.Name}.Sanitize()
		switch col.Type {
		case "timestamptz":
			return fmt.Sprintf("(%s AT TIME ZONE $3::text)::date BETWEEN $1::date AND $2::date", q)
		case "date":
			return fmt.Sprintf("%s BETWEEN $1::date AND $2::date AND $3::text IS NOT NULL", q)
		case "bigint":
			return fmt.Sprintf("(to_timestamp(%s / 1000.0) AT TIME ZONE $3::text)::date BETWEEN $1::date AND $2::date", q)
		}
	}
	return `EXISTS (SELECT FROM idemsink.batches b WHERE b.batch_id = t._batch_id AND b.target_date BETWEEN $1::date AND $2::date AND $3::text IS NOT NULL)`
}
