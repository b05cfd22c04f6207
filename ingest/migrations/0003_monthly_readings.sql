-- Monthly billing readings (DESIGN.md section 5). monthly_readings holds the current value,
-- one row per meter and period; monthly_reading_revisions holds every revision ever written,
-- the current one included, filled by the triggers below so that no writer can forget it.
-- A new value is written as an UPDATE with revision = revision + 1; the new revision starts
-- unexported, and the history keeps which revision billing exported and when.
CREATE TABLE monthly_readings (
    meter_id text NOT NULL,
    -- the first day of the month, in the utility's time zone
    period date NOT NULL CHECK (extract(day FROM period) = 1),
    -- 00:00 local time on the first day of the next month, as an instant
    boundary timestamptz NOT NULL,
    value numeric NOT NULL,
    unit text NOT NULL,
    method text NOT NULL
        CHECK (method IN ('register', 'actual', 'interpolated', 'customer', 'estimated')),
    evidence jsonb NOT NULL,
    computed_at timestamptz NOT NULL DEFAULT now(),
    revision integer NOT NULL DEFAULT 1 CHECK (revision >= 1),
    exported_at timestamptz,
    PRIMARY KEY (meter_id, period)
);

CREATE TABLE monthly_reading_revisions (
    meter_id text NOT NULL,
    period date NOT NULL,
    boundary timestamptz NOT NULL,
    value numeric NOT NULL,
    unit text NOT NULL,
    method text NOT NULL,
    evidence jsonb NOT NULL,
    computed_at timestamptz NOT NULL,
    revision integer NOT NULL,
    exported_at timestamptz,
    PRIMARY KEY (meter_id, period, revision)
);

CREATE FUNCTION monthly_readings_check_revision() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF NEW.meter_id <> OLD.meter_id OR NEW.period <> OLD.period THEN
        RAISE EXCEPTION 'a monthly reading cannot move to another meter or period';
    END IF;
    IF NEW.revision = OLD.revision THEN
        IF (NEW.boundary, NEW.value, NEW.unit, NEW.method, NEW.evidence)
                IS DISTINCT FROM (OLD.boundary, OLD.value, OLD.unit, OLD.method, OLD.evidence) THEN
            RAISE EXCEPTION 'a changed monthly reading of % % needs revision %',
                OLD.meter_id, OLD.period, OLD.revision + 1;
        END IF;
    ELSIF NEW.revision <> OLD.revision + 1 THEN
        RAISE EXCEPTION 'the next revision of % % is %, not %',
            OLD.meter_id, OLD.period, OLD.revision + 1, NEW.revision;
    ELSE
        NEW.exported_at := NULL;
    END IF;
    RETURN NEW;
END
$$;

CREATE TRIGGER monthly_readings_check_revision
    BEFORE UPDATE ON monthly_readings
    FOR EACH ROW EXECUTE FUNCTION monthly_readings_check_revision();

CREATE FUNCTION monthly_readings_keep_history() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'INSERT' OR NEW.revision <> OLD.revision THEN
        INSERT INTO monthly_reading_revisions
            (meter_id, period, boundary, value, unit, method, evidence, computed_at, revision,
             exported_at)
        VALUES
            (NEW.meter_id, NEW.period, NEW.boundary, NEW.value, NEW.unit, NEW.method,
             NEW.evidence, NEW.computed_at, NEW.revision, NEW.exported_at);
    ELSIF NEW.exported_at IS DISTINCT FROM OLD.exported_at THEN
        UPDATE monthly_reading_revisions SET exported_at = NEW.exported_at
        WHERE meter_id = NEW.meter_id AND period = NEW.period AND revision = NEW.revision;
    END IF;
    RETURN NULL;
END
$$;

CREATE TRIGGER monthly_readings_keep_history
    AFTER INSERT OR UPDATE ON monthly_readings
    FOR EACH ROW EXECUTE FUNCTION monthly_readings_keep_history();
