-- The ledger: what idemsink applied, batch by batch, and how far each
-- partition is applied. It is written in the same transaction as the target
-- rows, so it never disagrees with them.
CREATE SCHEMA IF NOT EXISTS idemsink;

CREATE TABLE idemsink.batches (
    batch_id          uuid        PRIMARY KEY,
    run_id            uuid        NOT NULL,
    pipeline          text        NOT NULL,
    target_date       date,       -- NULL for a batch of dead letters only
    group_id          text        NOT NULL,
    generation        integer     NOT NULL,
    member_id         text        NOT NULL,
    ranges            jsonb       NOT NULL, -- [{topic, partition, first, last, count}]
    records           integer     NOT NULL, -- records taken from Kafka
    superseded        integer     NOT NULL, -- replaced by a newer version in the batch
    skipped           integer     NOT NULL, -- at or below the ledger's applied offset
    staged            integer     NOT NULL,
    inserted          integer     NOT NULL,
    updated           integer     NOT NULL,
    unchanged         integer     NOT NULL,
    stale             integer     NOT NULL, -- older than the stored version
    deleted           integer     NOT NULL,
    dead_lettered     integer     NOT NULL,
    applications      integer     NOT NULL DEFAULT 1, -- >1: the same batch applied again
    stage_ms          real        NOT NULL,
    upsert_ms         real        NOT NULL,
    verify_ms         real        NOT NULL,
    first_applied_at  timestamptz NOT NULL DEFAULT now(),
    last_applied_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX batches_run_idx ON idemsink.batches (run_id);
CREATE INDEX batches_pipeline_date_idx ON idemsink.batches (pipeline, target_date);

-- applied_offset is the end of the contiguous applied prefix: every offset
-- at or below it is applied. generation fences writers from older group
-- generations.
CREATE TABLE idemsink.offsets (
    group_id       text        NOT NULL,
    topic          text        NOT NULL,
    partition      integer     NOT NULL,
    applied_offset bigint      NOT NULL,
    generation     integer     NOT NULL,
    member_id      text        NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (group_id, topic, partition)
);

CREATE TABLE idemsink.dead_letters (
    pipeline    text        NOT NULL,
    topic       text        NOT NULL,
    partition   integer     NOT NULL,
    "offset"    bigint      NOT NULL,
    key         bytea,
    value       bytea,
    headers     jsonb,
    reason      text        NOT NULL,
    batch_id    uuid        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, topic, partition, "offset")
);

---- create above / drop below ----

DROP SCHEMA idemsink CASCADE;
