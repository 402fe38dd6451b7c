-- Retention finds finished deliveries by when they finished.
CREATE INDEX deliveries_finished ON deliveries (finished_at) WHERE state IN ('success', 'failed');
