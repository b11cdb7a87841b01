-- A transaction's dates on which it changed nothing (every record unchanged,
-- stale, superseded or skipped: a redelivery, a replay over rows already in
-- place) get no entry each in idemsink.batches and
-- idemsink.batch_applications: the transaction records them together in
-- one row here. A replay of a million records over 365 dates would
-- otherwise write some 73,000 batch-log rows (about 95 MB of WAL) to say
-- that nothing changed. ranges is the transaction's offset ranges,
-- [{topic, partition, first, last, count}]; the counts are summed over the
-- dates.
CREATE TABLE idemsink.unchanged_applications (
    applied_at  timestamptz NOT NULL DEFAULT now(),
    pipeline    text        NOT NULL,
    group_id    text        NOT NULL,
    generation  integer     NOT NULL,
    member_id   text        NOT NULL,
    ranges      jsonb       NOT NULL,
    dates       date[]      NOT NULL,
    records     integer     NOT NULL,
    superseded  integer     NOT NULL,
    skipped     integer     NOT NULL,
    staged      integer     NOT NULL,
    unchanged   integer     NOT NULL,
    stale       integer     NOT NULL
);
CREATE INDEX unchanged_applications_time_idx ON idemsink.unchanged_applications (applied_at);

---- create above / drop below ----

DROP TABLE idemsink.unchanged_applications;
