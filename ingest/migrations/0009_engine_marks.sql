-- Meters whose data changed and that the engines have not run since (ingest/engine_marks.py).
-- A batch writes its marks in its own transaction, so a mark is exactly as durable as the
-- readings that caused it: a worker killed before its engines ran leaves them here for the
-- next engine run of any worker. `since` is the earliest instant the new rows reach (what the
-- engines must recompute from); `marked_at` changes with every new mark, so that a run can
-- remove only the marks it has seen; `first_marked_at` does not, so that the marks of a meter
-- telegramming every half minute gather for the engines' delay into one run; `claimed_until`
-- is the lease of the engine run that took the mark, after which another run may take it (its
-- worker died).
CREATE TABLE engine_marks (
    meter_id text PRIMARY KEY,
    since timestamptz NOT NULL,
    marked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    first_marked_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    claimed_until timestamptz
);

-- Runs take marks in the order they were made (engine_marks.claim).
CREATE INDEX engine_marks_first_marked ON engine_marks (first_marked_at);

-- Raw frames the ingest has tried to decode with the keys in meter_keys (ingest/engine_marks.py,
-- ingest/engine_loop.py): a frame that arrives raw for a meter whose key the database holds is
-- decoded by the worker's engine thread; one that still fails is not tried again until
-- `metergate keys add` gives its meter a key, or (`tried_error` UnsupportedError: a compact
-- frame of a format not known yet) until the thread learns a new compact format.
ALTER TABLE raw_frames ADD COLUMN tried_at timestamptz, ADD COLUMN tried_error text;

CREATE INDEX raw_frames_tried_unsupported ON raw_frames (id)
    WHERE decoded_at IS NULL AND tried_error = 'UnsupportedError';

CREATE INDEX raw_frames_untried ON raw_frames (meter_id)
    WHERE decoded_at IS NULL AND tried_at IS NULL AND meter_id IS NOT NULL;
