-- Deleted keys and the position of the delete that removed them, per
-- pipeline. A delete removes the target row, so the row can no longer
-- carry its version; the tombstone does, so that a late, older upsert of
-- the key (a redelivery, a replay, a snapshot overlapping the stream) is
-- recognized as stale and does not bring the row back, and a late delete
-- cannot remove a newer row. Tombstones are kept until removed by hand.
CREATE TABLE idemsink.tombstones (
    pipeline       text        NOT NULL,
    record_id      uuid        NOT NULL,
    version        bigint      NOT NULL,
    src_topic      text        NOT NULL,
    src_partition  integer     NOT NULL,
    src_offset     bigint      NOT NULL,
    batch_id       uuid        NOT NULL,
    deleted_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pipeline, record_id)
);

---- create above / drop below ----

DROP TABLE idemsink.tombstones;
