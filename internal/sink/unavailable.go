package sink

import (
	"context"
	"fmt"
	"strings"

	"github.com/idemsink/idemsink/internal/batch"
	"github.com/idemsink/idemsink/internal/record"
)

// Unavailable columns (Debezium pipelines only). With REPLICA IDENTITY
// DEFAULT, an UPDATE that leaves a large out-of-line (TOAST) value alone
// does not carry it, and Debezium sends a placeholder instead. The decoder
// marks such columns (record.Row.Unavailable); the batch fills them from
// an older row of the key when it has one; the rest keep the value stored
// in the target:
//
//   - completeStage, after COPY: a staged row whose key is not in the
//     target cannot be completed and is dead-lettered (class
//     debezium-event), in the batch's transaction; the others take the
//     stored values in the stage, so that the probe's change test and the
//     verification compare whole rows.
//   - the upsert's SET and the verification read CASE WHEN the column is
//     unavailable THEN the target's value: under the row lock the target
//     row is the newest one, whatever committed since the fill.
//
// The rest of the row is written under the usual version guard.

// unavailableArg is a row's unavailable columns as the stage's
// integer[], NULL when it has none.
func unavailableArg(r *record.Row) any {
	if len(r.Unavailable) == 0 {
		return nil
	}
	return r.Unavailable
}

// completeStage takes out of the stage the rows that cannot be completed,
// dead-lettering them, and fills in the others' unavailable columns.
func (t *txn) completeStage(ctx context.Context) error {
	if !t.st.unavailable || !anyUnavailable(t.todo) {
		return nil
	}
	rows, err := t.tx.Query(ctx, t.st.incomplete)
	if err != nil {
		return fmt.Errorf("take incomplete rows from the stage: %w", err)
	}
	gone := map[record.Position]bool{}
	for rows.Next() {
		var p record.Position
		if err := rows.Scan(&p.Topic, &p.Partition, &p.Offset); err != nil {
			return fmt.Errorf("take incomplete rows from the stage: %w", err)
		}
		gone[p] = true
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("take incomplete rows from the stage: %w", err)
	}
	if len(gone) > 0 {
		kept := t.todo[:0:0]
		for _, r := range t.todo {
			if gone[r.Pos] {
				t.dead = append(t.dead, deadLetter{t.incompleteDead(*r.Row), r.Batch})
				t.copied[r.Batch]--
				continue
			}
			kept = append(kept, r)
		}
		t.todo = kept
	}
	if _, err := t.tx.Exec(ctx, t.st.fill); err != nil {
		return fmt.Errorf("fill unavailable columns in the stage: %w", err)
	}
	return nil
}

// stored reports whether the target holds r's key (row by row).
func (t *txn) stored(ctx context.Context, r record.Row) (bool, error) {
	var ok bool
	if err := t.tx.QueryRow(ctx, fmt.Sprintf("SELECT EXISTS (SELECT 1 FROM %s WHERE record_id = $1)", t.st.target), r.ID).Scan(&ok); err != nil {
		return false, fmt.Errorf("look up %s: %w", t.st.target, err)
	}
	return ok, nil
}

// incompleteDead is the dead letter of a row whose unavailable columns
// have no stored value to keep.
func (t *txn) incompleteDead(r record.Row) record.DeadLetter {
	names := make([]string, len(r.Unavailable))
	for i, c := range r.Unavailable {
		names[i] = t.u.Pipeline.Columns[c].Name
	}
	err := record.Bad(record.ClassEvent, "column(s) %s unavailable (Debezium's placeholder for an unchanged TOAST value) and the row is not in %s to keep them from: the event cannot be completed",
		strings.Join(names, ", "), t.st.target)
	return record.DeadLetterFor(r.Pos, r.Key, r.Value, err)
}

func anyUnavailable(rows []batch.Dated) bool {
	for _, r := range rows {
		if len(r.Unavailable) > 0 {
			return true
		}
	}
	return false
}
