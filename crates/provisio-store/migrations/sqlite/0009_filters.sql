-- Handler filters: a CEL condition on the event (NULL: every event), and per
-- event the handlers whose filter it did not pass (JSON: [{"handler_id",
-- "error"}], NULL: none), for the event's detail.
ALTER TABLE handlers ADD COLUMN event_filter TEXT;
ALTER TABLE events ADD COLUMN filtered_out TEXT;
-- Sample data per event type (a JSON object), for previews and test sends;
-- the built-in types' samples are written at every start.
ALTER TABLE event_types ADD COLUMN example TEXT;
