-- Dead-letter operations (consumer dlq list / replay).
--
-- "offset" is a reserved word that every query had to quote: it becomes
-- kafka_offset, in place, so that existing dead letters keep their rows.
-- A dead letter that a later replay applied is marked replayed_at and
-- leaves the list; one that still fails keeps its row, with the reason of
-- its latest attempt, and counts its attempts.
ALTER TABLE idemsink.dead_letters RENAME COLUMN "offset" TO kafka_offset;

ALTER TABLE idemsink.dead_letters
    ADD COLUMN replayed_at    timestamptz,
    ADD COLUMN replays        integer NOT NULL DEFAULT 0,
    ADD COLUMN last_replay_at timestamptz;

-- The list and the replay read the pending dead letters of a pipeline.
CREATE INDEX dead_letters_pending ON idemsink.dead_letters (pipeline, created_at)
    WHERE replayed_at IS NULL;

---- create above / drop below ----

DROP INDEX idemsink.dead_letters_pending;

ALTER TABLE idemsink.dead_letters
    DROP COLUMN last_replay_at,
    DROP COLUMN replays,
    DROP COLUMN replayed_at;

ALTER TABLE idemsink.dead_letters RENAME COLUMN kafka_offset TO "offset";
