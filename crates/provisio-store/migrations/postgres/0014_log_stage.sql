-- The log filtered by `stage=before`: before-stage calls are few among many
-- after-stage ones, so a walk of the log newest first stepped over every
-- after-stage row (0.35 s at 1,000,000 rows). Partial: after-stage calls,
-- the hot path, pay nothing for it. The filter writes the stage as a
-- literal, so both databases can match the index's condition.
CREATE INDEX executions_stage_before ON executions (id) WHERE stage = 'before';
