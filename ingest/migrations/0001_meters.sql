-- The meter registry (DESIGN.md section 4). A meter heard on the air or the bus but not yet in
-- the registry is recorded as 'unregistered': a drive-by receiver also hears the neighbours'
-- meters, and only registered ('active') meters are billed.
CREATE TABLE meters (
    meter_id text PRIMARY KEY,
    serial text,
    manufacturer text,
    medium text,
    -- the kind that selects the verification interval: mechanical, ultrasonic, electromagnetic
    kind text,
    model text,
    -- selects the leak and night-flow thresholds (DESIGN.md section 6)
    meter_class text,
    -- the permanent flow Q3 printed on the meter (EN ISO 4064-1), in m3/h: plausibility derives
    -- the largest rise the meter can make between two readings from it
    q3_m3h numeric CHECK (q3_m3h > 0),
    -- ISO 3166-1 alpha-2; with medium and kind it selects the rule in verification_rules
    country text CHECK (country ~ '^[A-Z]{2}$'),
    premise text,
    address text,
    customer_ref text,
    contract_ref text,
    installed_on date,
    removed_on date,
    -- the metrological marking date of a new meter, or its last re-verification
    verified_on date,
    verification_interval_years integer CHECK (verification_interval_years > 0),
    next_verification_due date,
    status text NOT NULL DEFAULT 'active'
        CHECK (status IN ('active', 'removed', 'unregistered')),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now(),
    CHECK (removed_on IS NULL OR installed_on IS NULL OR removed_on >= installed_on)
);

-- Meter replacement is found through the premise: the meters installed there over time.
CREATE INDEX meters_premise ON meters (premise, installed_on) WHERE premise IS NOT NULL;

-- A meter swapped for another on a premise (or an index restarted in place: the same meter id
-- twice), with the old meter's final index and the new one's start index, so that billing never
-- sees the swap as negative consumption (DESIGN.md section 5; ingest/series.py Replacement).
CREATE TABLE meter_replacements (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    replaced_at timestamptz NOT NULL,
    old_meter_id text NOT NULL,
    old_final numeric NOT NULL,
    new_meter_id text NOT NULL,
    new_start numeric NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    UNIQUE (old_meter_id, replaced_at)
);

CREATE INDEX meter_replacements_new ON meter_replacements (new_meter_id, replaced_at);
