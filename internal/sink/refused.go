package sink

import (
	"fmt"
	"log/slog"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/idemsink/idemsink/internal/batch"
)

// refused is the dead letter of a row PostgreSQL refused, logged on its
// own line: the batch's warning says that row-by-row started, this one
// which record it was and why.
func refused(log *slog.Logger, r batch.Row, pgErr *pgconn.PgError) batch.DeadLetter {
	reason := fmt.Sprintf("%s: %s (SQLSTATE %s)", batch.ClassRefused, pgErr.Message, pgErr.Code)
	if pgErr.ColumnName != "" {
		reason = fmt.Sprintf("%s: column %s: %s (SQLSTATE %s)", batch.ClassRefused, pgErr.ColumnName, pgErr.Message, pgErr.Code)
	}
	if pgErr.ConstraintName != "" {
		reason += ", constraint " + pgErr.ConstraintName
	}
	log.Warn("dead-lettering record refused by PostgreSQL", "topic", r.Pos.Topic, "partition", r.Pos.Partition,
		"offset", r.Pos.Offset, "reason", reason)
	return batch.DeadLetter{Pos: r.Pos, Key: r.Key, Value: r.Value, Reason: reason}
}
