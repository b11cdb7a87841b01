-- Every application of a batch, so that a backfill's history can be read
-- back: which group applied it, when, and what it did. idemsink.batches
-- keeps one row per batch (its latest application); this table keeps them
-- all. repaired counts rows whose content was restored by the record they
-- came from (same version and position, other content).
CREATE TABLE idemsink.batch_applications (
    batch_id      uuid        NOT NULL,
    application   integer     NOT NULL,
    applied_at    timestamptz NOT NULL DEFAULT now(),
    pipeline      text        NOT NULL,
    target_date   date,
    group_id      text        NOT NULL,
    generation    integer     NOT NULL,
    member_id     text        NOT NULL,
    records       integer     NOT NULL,
    skipped       integer     NOT NULL,
    staged        integer     NOT NULL,
    inserted      integer     NOT NULL,
    updated       integer     NOT NULL,
    repaired      integer     NOT NULL,
    unchanged     integer     NOT NULL,
    stale         integer     NOT NULL,
    deleted       integer     NOT NULL,
    dead_lettered integer     NOT NULL,
    PRIMARY KEY (batch_id, application)
);
CREATE INDEX batch_applications_time_idx ON idemsink.batch_applications (applied_at);

-- The applications before this migration are kept as the batch's first.
INSERT INTO idemsink.batch_applications (batch_id, application, applied_at, pipeline, target_date, group_id, generation,
    member_id, records, skipped, staged, inserted, updated, repaired, unchanged, stale, deleted, dead_lettered)
SELECT batch_id, applications, last_applied_at, pipeline, target_date, group_id, generation, member_id, records, skipped,
    staged, inserted, updated, 0, unchanged, stale, deleted, dead_lettered
FROM idemsink.batches;

ALTER TABLE idemsink.batches ADD COLUMN repaired integer NOT NULL DEFAULT 0;

---- create above / drop below ----

ALTER TABLE idemsink.batches DROP COLUMN repaired;
DROP TABLE idemsink.batch_applications;
