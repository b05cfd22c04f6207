-- Billing exports (issue 6, DESIGN.md section 5). Each POST of a period's export is a row; a
-- period with a row is frozen: the API then serves, for each meter, the revision of
-- monthly_readings that billing exported (monthly_reading_revisions.exported_at) and lists the
-- revisions written after it beside it, so an exported value never changes silently.
CREATE TABLE billing_exports (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    period date NOT NULL CHECK (extract(day FROM period) = 1),
    exported_at timestamptz NOT NULL DEFAULT now(),
    -- the name of the API token that asked for it
    exported_by text NOT NULL,
    -- monthly readings frozen by this request (meters exported before keep their revision)
    newly_exported integer NOT NULL CHECK (newly_exported >= 0)
);

CREATE INDEX billing_exports_period ON billing_exports (period, exported_at);
