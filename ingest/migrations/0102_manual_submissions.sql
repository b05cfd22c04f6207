-- Manual readings entered through the API (issue 6): who entered which value, and the
-- plausibility warnings a person confirmed. The reading itself goes to `readings` with source
-- 'manual'; this is its provenance, which billing disputes ask for.
CREATE TABLE manual_submissions (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    meter_id text NOT NULL,
    measured_at timestamptz NOT NULL,
    value numeric NOT NULL,
    unit text NOT NULL,
    reader text NOT NULL CHECK (reader IN ('customer', 'engineer')),
    -- the warnings of the check, each {"code", "message"}; empty when it found nothing
    warnings jsonb NOT NULL DEFAULT '[]',
    confirmed boolean NOT NULL,
    replacement boolean NOT NULL DEFAULT false,
    submitted_by text NOT NULL,
    submitted_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX manual_submissions_meter ON manual_submissions (meter_id, measured_at);
