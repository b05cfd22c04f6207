-- What the ingest writes from MQTT (DESIGN.md sections 3, 4 and 9).

-- One row per value. The key includes measured_at, the time column, so that the table can
-- become a TimescaleDB hypertable (a unique index there must contain the partitioning column).
-- A redelivered message inserts nothing: writes are INSERT ... ON CONFLICT DO NOTHING. There is
-- no foreign key to meters on purpose: the ingest registers unknown meters itself, and a key
-- check per row would cost the write path for nothing.
CREATE TABLE readings (
    meter_id text NOT NULL,
    quantity text NOT NULL,
    -- bigint: ten DIFEs give a storage number of up to 41 bits (EN 13757-3 clause 6.3.2)
    storage bigint NOT NULL CHECK (storage >= 0),
    tariff integer NOT NULL CHECK (tariff >= 0),
    subunit integer NOT NULL CHECK (subunit >= 0),
    function text NOT NULL CHECK (function IN ('instantaneous', 'maximum', 'minimum', 'error')),
    measured_at timestamptz NOT NULL,
    value numeric NOT NULL,
    unit text NOT NULL,
    received_at timestamptz NOT NULL,
    gateway_id text,
    source text NOT NULL CHECK (source IN ('wmbus', 'mbus', 'modbus', 'manual', 'import')),
    -- the idempotency key of the MQTT message that brought the row; NULL for manual and import
    msg_id text,
    -- set by the plausibility check: the row is kept, and an implausible_reading alert explains
    implausible boolean NOT NULL DEFAULT false,
    PRIMARY KEY (meter_id, quantity, storage, tariff, subunit, function, measured_at)
);

-- Frames the gateway could not decode or decrypt, kept to be decoded again when a key arrives.
CREATE TABLE raw_frames (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    msg_id text NOT NULL UNIQUE,
    gateway_id text NOT NULL,
    seq bigint NOT NULL,
    meter_id text,
    protocol text,
    frame bytea NOT NULL,
    error_type text NOT NULL,
    error_message text NOT NULL,
    error_offset integer,
    received_at timestamptz NOT NULL,
    rssi_dbm integer,
    location jsonb,
    stored_at timestamptz NOT NULL DEFAULT now(),
    decoded_at timestamptz
);

CREATE INDEX raw_frames_undecoded ON raw_frames (meter_id, received_at) WHERE decoded_at IS NULL;

-- The status the meter reported with a reading message (flags such as leak, burst, backflow),
-- one row per message, so that the leak engine sees when a flag appears and when it clears.
CREATE TABLE meter_status (
    msg_id text PRIMARY KEY,
    meter_id text NOT NULL,
    reported_at timestamptz NOT NULL,
    flags text[] NOT NULL,
    raw bigint,
    gateway_id text NOT NULL
);

CREATE INDEX meter_status_meter ON meter_status (meter_id, reported_at);

-- Messages the ingest could not accept. The same bytes on the same topic are one row: an MQTT
-- redelivery of a bad message after a crash adds nothing.
CREATE TABLE dead_letters (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic text NOT NULL,
    payload bytea NOT NULL,
    payload_sha256 bytea GENERATED ALWAYS AS (sha256(payload)) STORED,
    error text NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (topic, payload_sha256)
);
