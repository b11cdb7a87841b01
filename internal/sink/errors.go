package sink

import (
	"errors"
	"fmt"
	"strings"

	"github.com/idemsink/idemsink/internal/record"
	"github.com/jackc/pgx/v5/pgconn"
)

// ErrFenced means a writer from a newer group generation owns a partition
// of the batch: the batch must be abandoned, not retried. A *FencedError
// matches it with errors.Is.
var ErrFenced = errors.New("fenced by a newer consumer generation")

// FencedError is a batch refused because a newer generation has claimed
// one of its partitions. Ledger holds the applied offsets the transaction
// found for the batch's partitions: where they really stand, and where the
// consumer must read them again from.
type FencedError struct {
	TP                   record.TP // the first partition found claimed by a newer generation
	Generation, Ledgered int32     // the writer's generation and the ledger's
	Ledger               map[record.TP]int64
}

func (e *FencedError) Error() string {
	return fmt.Sprintf("%v: %s is at generation %d, this writer at %d", ErrFenced, e.TP, e.Ledgered, e.Generation)
}

// Is makes errors.Is(err, ErrFenced) hold.
func (e *FencedError) Is(target error) bool { return target == ErrFenced }

// VerifyError is a failed verification; the transaction was rolled back.
type VerifyError struct {
	Staged, Copied, Missing, Behind int64
}

func (e *VerifyError) Error() string {
	return fmt.Sprintf("verification failed: %d staged of %d copied, %d missing from the target, %d behind their staged version",
		e.Staged, e.Copied, e.Missing, e.Behind)
}

// Class is what the consumer should do about a failed apply.
type Class int

const (
	// Outage: the database is down, unreachable, shutting down, out of
	// resources or read-only, or the attempt timed out. Retry with
	// backoff; the consumer is not ready meanwhile. Never dead-letter.
	Outage Class = iota + 1
	// Conflict: a serialization failure or a deadlock. Retry at once.
	Conflict
	// Data: the database refused a row (SQLSTATE class 22 or 23). Apply
	// isolates and dead-letters such rows itself; the class only reaches
	// a caller from a path that could not isolate them.
	Data
	// Fenced: a newer generation owns a partition; abandon the batch.
	Fenced
	// Stuck: anything else (permissions, a dropped table, a failed
	// verification, ...). Retried with backoff, but the batch shows as
	// stuck: an operator has to act.
	Stuck
)

func (c Class) String() string {
	switch c {
	case Outage:
		return "outage"
	case Conflict:
		return "conflict"
	case Data:
		return "data"
	case Fenced:
		return "fenced"
	case Stuck:
		return "stuck"
	}
	return "none"
}

// Classify sorts an error of Apply or Claim into the class that says how to
// retry it; nil is class 0.
func Classify(err error) Class {
	if err == nil {
		return 0
	}
	if errors.Is(err, ErrFenced) {
		return Fenced
	}
	var verr *VerifyError
	if errors.As(err, &verr) {
		return Stuck
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		// No answer from the server: a connection refused or lost, a
		// timeout, a canceled attempt.
		return Outage
	}
	code := pgErr.Code
	switch {
	case code == "40001" || code == "40P01":
		return Conflict
	case dataError(pgErr):
		return Data
	case strings.HasPrefix(code, "08"), // connection exception
		strings.HasPrefix(code, "53"),  // insufficient resources: disk full, out of memory, too many connections
		strings.HasPrefix(code, "57P"), // admin or crash shutdown, cannot connect now
		code == "57014",                // query canceled: statement timeout, or our own cancel
		code == "25006",                // read-only transaction: a standby, or default_transaction_read_only
		strings.HasPrefix(code, "58"):  // system error: I/O
		return Outage
	}
	return Stuck
}

// SQLState returns err's SQLSTATE, or "" if the server did not answer.
func SQLState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// Transient reports whether err is retried rather than dead-lettered or
// abandoned: outages, conflicts and stuck batches.
func Transient(err error) bool {
	switch Classify(err) {
	case Outage, Conflict, Stuck:
		return true
	}
	return false
}

// dataError reports whether the database refused the data itself (class 22
// data exception, class 23 integrity violation), as opposed to failing.
func dataError(e *pgconn.PgError) bool {
	return len(e.Code) == 5 && (e.Code[:2] == "22" || e.Code[:2] == "23")
}
