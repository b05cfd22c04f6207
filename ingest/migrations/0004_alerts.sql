-- Alerts (DESIGN.md sections 4, 6 and 7). The kinds are DESIGN.md section 4's list plus
-- low_battery, which section 6 names among the meter flags (ingest/alerts.py ALERT_KINDS).
-- Several rules can raise one kind (a meter's own leak flag, flow in every hour of a day), so
-- an alert also names its rule, the same text the engines keep in evidence->>'rule'.
CREATE TABLE alerts (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter_id text NOT NULL,
    kind text NOT NULL CHECK (kind IN (
        'leak', 'burst', 'backflow', 'dry', 'tamper', 'low_battery', 'night_flow', 'no_data',
        'verification_due', 'verification_overdue', 'implausible_reading'
    )),
    rule text NOT NULL,
    opened_at timestamptz NOT NULL,
    closed_at timestamptz,
    evidence jsonb NOT NULL DEFAULT '{}',
    CHECK (closed_at IS NULL OR closed_at >= opened_at)
);

-- At most one open alert per meter, kind and rule: opening one is an INSERT ... ON CONFLICT DO
-- NOTHING against this index, so two engines that see the same condition open it once.
CREATE UNIQUE INDEX alerts_one_open ON alerts (meter_id, kind, rule) WHERE closed_at IS NULL;
CREATE INDEX alerts_meter ON alerts (meter_id, opened_at);
