// Package replay re-applies records read back after the daemon has passed
// them: a range of target dates read again from Kafka beside the live group
// (Dates, which finds where a date starts with SearchDate's bisection of
// offsets), and stored dead letters decoded again with the current
// configuration (DeadLetters).
//
// Both take the daemon's path, in one loop: decode, a record that does not
// decode becomes the dead letter record.DeadLetterFor makes of it (an
// oversize record keeps record.KeptBytes), rows go into per-date batches
// that are applied when they reach batch.max_records or max_bytes, and
// sink.Apply runs under internal/retry with the daemon's backoff and
// apply_timeout, retrying an outage rather than failing at once. Replays
// write their ledger rows under a group of their own, never the live
// group's: they can neither fence the group nor move its offsets.
package replay
