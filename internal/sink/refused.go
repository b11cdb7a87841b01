package sink

import (
	"fmt"
	"log/slog"

	"github.com/idemsink/idemsink/internal/record"
	"github.com/jackc/pgx/v5/pgconn"
)

// refused is the dead letter of a row PostgreSQL refused, logged on its
// own line: the batch's warning says that row-by-row started, this one
// which record it was and why.
func refused(log *slog.Logger, r record.Row, pgErr *pgconn.PgError) record.DeadLetter {
	reason := fmt.Sprintf("%s: %s (SQLSTATE %s)", record.ClassRefused, pgErr.Message, pgErr.Code)
	if pgErr.ColumnName != "" {
		reason = fmt.Sprintf("%s: column %s: %s (SQLSTATE %s)", record.ClassRefused, pgErr.ColumnName, pgErr.Message, pgErr.Code)
	}
	if pgErr.ConstraintName != "" {
		reason += ", constraint " + pgErr.ConstraintName
	}
	log.Warn("dead-lettering record refused by PostgreSQL", "topic", r.Pos.Topic, "partition", r.Pos.Partition,
		"offset", r.Pos.Offset, "reason", reason)
	return record.DeadLetter{Pos: r.Pos, Key: r.Key, Value: r.Value, Reason: reason}
}
