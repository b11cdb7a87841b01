package sink

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/idemsink/idemsink/internal/record"
)

// Application is one application of a batch, as the batch log keeps it,
// or the dates on which one transaction changed nothing (Dates set, no
// batch id, Application 0; see migrations/005).
type Application struct {
	BatchID     [16]byte  `json:"-"`
	Batch       string    `json:"batch_id,omitempty"`
	Application int       `json:"application"`
	AppliedAt   time.Time `json:"applied_at"`
	Pipeline    string    `json:"pipeline"`
	Date        string    `json:"target_date"` // YYYY-MM-DD, or "" for dead letters only and for Dates
	// Dates are the dates, YYYY-MM-DD in order, on which a transaction
	// changed nothing: every record unchanged, stale, superseded or
	// skipped.
	Dates      []string `json:"dates,omitempty"`
	Group      string   `json:"group"`
	Generation int32    `json:"generation"`
	Member     string   `json:"member"`
	Records    int      `json:"records"`
	Skipped    int      `json:"skipped"`
	Staged     int      `json:"staged"`
	Inserted   int      `json:"inserted"`
	Updated    int      `json:"updated"`
	Repaired   int      `json:"repaired"`
	Unchanged  int      `json:"unchanged"`
	Stale      int      `json:"stale"`
	Deleted    int      `json:"deleted"`
	Dead       int      `json:"dead_lettered"`
}

// HistoryFilter narrows History; zero fields match everything.
type HistoryFilter struct {
	Pipeline string
	Date     record.Date
	Group    string // an exact group, or a prefix ending in '*'
	Limit    int    // newest first; 0 means 50
}

// history reads the batch log's applications and the unchanged dates,
// newest first.
const history = `SELECT * FROM (
  SELECT batch_id, application, applied_at, pipeline, coalesce(to_char(target_date, 'YYYY-MM-DD'), '') AS target_date,
    NULL::text[] AS dates, group_id, generation, member_id, records, skipped, staged, inserted, updated, repaired, unchanged, stale,
    deleted, dead_lettered
  FROM idemsink.batch_applications
  WHERE ($1 = '' OR pipeline = $1) AND ($2::date IS NULL OR target_date = $2)
    AND ($3 = '' OR group_id = $3 OR (right($3, 1) = '*' AND starts_with(group_id, left($3, -1))))
  UNION ALL
  SELECT NULL, 0, applied_at, pipeline, '', ARRAY(SELECT to_char(d, 'YYYY-MM-DD') FROM unnest(dates) AS d ORDER BY d),
    group_id, generation, member_id, records, skipped, staged, 0, 0, 0, unchanged, stale, 0, 0
  FROM idemsink.unchanged_applications
  WHERE ($1 = '' OR pipeline = $1) AND ($2::date IS NULL OR $2::date = ANY(dates))
    AND ($3 = '' OR group_id = $3 OR (right($3, 1) = '*' AND starts_with(group_id, left($3, -1))))
) AS a
ORDER BY applied_at DESC, batch_id NULLS LAST, application DESC
LIMIT $4`

// History returns the latest applications of batches, newest first: what
// the live group and every replay or backfill did, batch by batch.
func (s *Sink) History(ctx context.Context, f HistoryFilter) ([]Application, error) {
	var date any
	if !f.Date.IsZero() {
		date = f.Date.Time()
	}
	limit := f.Limit
	if limit <= 0 {
		limit = 50
	}
	rows, err := s.pool.Query(ctx, history, f.Pipeline, date, f.Group, limit)
	if err != nil {
		return nil, fmt.Errorf("read the batch log: %w", err)
	}
	apps, err := pgx.CollectRows(rows, func(row pgx.CollectableRow) (Application, error) {
		var a Application
		var id pgtype.UUID
		err := row.Scan(&id, &a.Application, &a.AppliedAt, &a.Pipeline, &a.Date, &a.Dates, &a.Group, &a.Generation, &a.Member,
			&a.Records, &a.Skipped, &a.Staged, &a.Inserted, &a.Updated, &a.Repaired, &a.Unchanged, &a.Stale, &a.Deleted, &a.Dead)
		if id.Valid {
			a.BatchID = id.Bytes
			a.Batch = fmt.Sprintf("%x-%x-%x-%x-%x", a.BatchID[0:4], a.BatchID[4:6], a.BatchID[6:8], a.BatchID[8:10], a.BatchID[10:16])
		}
		return a, err
	})
	if err != nil {
		return nil, fmt.Errorf("read the batch log: %w", err)
	}
	return apps, nil
}
