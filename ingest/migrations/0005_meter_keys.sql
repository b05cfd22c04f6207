-- AES-128 keys of meters whose frames arrive encrypted (EN 13757-7 security modes 5 and 7), so
-- that raw_frames stored before a key was known can be decoded again when it is added.
--
-- The keys are secrets, and where they could leak decides how they are stored:
-- - a table of their own, so that privileges keep them from every role but the ingest's (the
--   API's role is never granted it; PUBLIC has no grant on it);
-- - written with bound parameters, never inside SQL text. PostgreSQL still logs bound values
--   in full when log_statement is 'mod' or 'all' (log_parameter_max_length defaults to -1), so
--   a server that logs statements must set log_parameter_max_length = 0;
-- - a key is checked by the application before it is written: a failed CHECK would put the row
--   (key included) into the error's DETAIL, and so into the server log and the client's error;
-- - backups of this database hold the keys and are secret too.
-- Nothing in metergate logs, prints or serves a key.
CREATE TABLE meter_keys (
    meter_id text PRIMARY KEY,
    key bytea NOT NULL CHECK (octet_length(key) = 16),
    added_at timestamptz NOT NULL DEFAULT now()
);

REVOKE ALL ON meter_keys FROM PUBLIC;
