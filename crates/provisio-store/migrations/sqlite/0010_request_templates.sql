-- An HTTP handler's request template (JSON: method, url, headers, body,
-- by_event; see provisio_core::request); NULL POSTs the payload.
ALTER TABLE handlers ADD COLUMN request_template TEXT;
