-- Head-of-line policy and conflation (issue 12).
--
-- on_exhausted: what an ordered handler's delivery that used up its attempts
-- does to its object's later deliveries: 'block' (the new default, for
-- existing handlers too: an update must not overtake the create it depends
-- on) keeps them waiting behind it; 'skip' is the old behaviour.
ALTER TABLE handlers ADD COLUMN on_exhausted TEXT NOT NULL DEFAULT 'block';
-- conflate: of several waiting deliveries of one object, only the newest is sent.
ALTER TABLE handlers ADD COLUMN conflate BOOLEAN NOT NULL DEFAULT false;
-- The delivery that replaced a superseded one.
ALTER TABLE deliveries ADD COLUMN superseded_by TEXT;

-- A blocked delivery keeps its line open, as pending and waiting ones do
-- (the set is `query::OPEN_STATES`).
DROP INDEX deliveries_open;
CREATE INDEX deliveries_open ON deliveries (handler_id, object_key)
    WHERE state IN ('pending', 'waiting', 'blocked');
-- Which delivery blocks a line, for the `blocked_by` of its waiting ones.
CREATE INDEX deliveries_blocked ON deliveries (handler_id, object_key)
    WHERE state = 'blocked';
-- A superseded delivery is finished: retention removes it like the others
-- (the set is `query::FINISHED_STATES`).
DROP INDEX deliveries_finished;
CREATE INDEX deliveries_finished ON deliveries (finished_at)
    WHERE state IN ('success', 'failed', 'superseded');
