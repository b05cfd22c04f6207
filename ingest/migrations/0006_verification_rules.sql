-- Verification intervals (DESIGN.md section 7): country (ISO 3166-1 alpha-2), medium, meter
-- kind -> years between metrological verifications. kind '*' is the rule for every kind of that
-- medium in that country that has no rule of its own; medium 'water' covers water meters of any
-- temperature unless a more specific medium has a row.
CREATE TABLE verification_rules (
    country text NOT NULL CHECK (country ~ '^[A-Z]{2}$'),
    medium text NOT NULL,
    kind text NOT NULL,
    interval_years integer NOT NULL CHECK (interval_years > 0),
    source text NOT NULL,
    PRIMARY KEY (country, medium, kind)
);

-- The rows are ingest.verification.RULES, with their legal sources there; a test keeps the two
-- equal.
INSERT INTO verification_rules (country, medium, kind, interval_years, source) VALUES
    ('LV', 'water', '*', 4, 'LV Cabinet Regulation No. 289 (2024)'),
    ('LV', 'water', 'ultrasonic', 6, 'LV Cabinet Regulation No. 289 (2024)'),
    ('LV', 'water', 'electromagnetic', 6, 'LV Cabinet Regulation No. 289 (2024)'),
    ('DE', 'water', '*', 6, 'DE MessEV Anlage 7 (Kaltwasserzaehler)'),
    ('DE', 'warm water', '*', 6, 'DE MessEV Anlage 7 as amended 2021'),
    ('PL', 'water', '*', 5, 'PL Dz.U. 2019 poz. 759'),
    ('LT', 'water', '*', 6, 'LT Order No. 4-523 (2014) as amended 2018'),
    ('EE', 'water', '*', 5, 'EE Regulation No. 65 (2018)');
