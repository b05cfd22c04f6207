-- Applied only where the timescaledb extension can be created (ingest/migrate.py); plain
-- PostgreSQL gives the same answers without it (DESIGN.md section 4). migrate_data moves the
-- rows already in readings into chunks, so this also works when TimescaleDB arrives later.
SELECT create_hypertable(
    'readings', 'measured_at',
    chunk_time_interval => INTERVAL '7 days',
    migrate_data => true,
    if_not_exists => true
);

-- Segments per meter; inside a segment the rest of the unique key, then time, so that the
-- idempotent insert of a late or redelivered reading finds its conflict in a compressed chunk
-- from the segment's min/max metadata.
ALTER TABLE readings SET (
    timescaledb.compress,
    timescaledb.compress_segmentby = 'meter_id',
    timescaledb.compress_orderby = 'quantity, storage, tariff, subunit, function, measured_at DESC'
);

-- Chunks older than 30 days are compressed; later readings still arrive (spooled gateways,
-- drive-by collection) and land in them at some extra cost.
SELECT add_compression_policy('readings', INTERVAL '30 days', if_not_exists => true);
