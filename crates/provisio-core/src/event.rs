//! An emitted event and the exact body receivers get (DESIGN §4):
//! `{"event": {"dt", "events_id", "object_id"}, "data": {…}}`.

use std::fmt;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::timefmt;

/// The longest string object id accepted; ids are keys, not documents.
pub const MAX_OBJECT_ID_LEN: usize = 256;

/// The id of the object an event is about. It keeps the JSON type the emitter gave
/// (`12` stays a number, `"12"` a string) because receivers compare it as such.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum ObjectId {
    #[schema(value_type = f64)]
    Number(serde_json::Number),
    String(String),
}

impl ObjectId {
    /// Accepts a JSON number or a non-empty string.
    pub fn from_json(value: serde_json::Value) -> Result<Self, String> {
        match value {
            serde_json::Value::Number(n) => Ok(Self::Number(n)),
            serde_json::Value::String(s) if s.is_empty() => Err("must not be empty".into()),
            serde_json::Value::String(s) if s.len() > MAX_OBJECT_ID_LEN => {
                Err(format!("must be at most {MAX_OBJECT_ID_LEN} characters"))
            }
            serde_json::Value::String(s) => Ok(Self::String(s)),
            _ => Err("must be a number or a string".into()),
        }
    }

    /// The object's identity for ordering and search: `12` and `"12"` are the
    /// same object.
    pub fn key(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::String(s) => s.clone(),
        }
    }

    /// The id as JSON text, as it goes into the payload and into storage.
    pub fn to_json(&self) -> String {
        match self {
            Self::Number(n) => n.to_string(),
            Self::String(s) => serde_json::to_string(s).expect("a string always serializes"),
        }
    }

    /// Reads back what [`ObjectId::to_json`] wrote.
    pub fn from_json_text(text: &str) -> Result<Self, String> {
        let value = serde_json::from_str(text).map_err(|e| e.to_string())?;
        Self::from_json(value)
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.key())
    }
}

/// A new event id: a ULID, so ids sort by creation time on every node.
pub fn new_event_id() -> String {
    ulid::Ulid::new().to_string()
}

/// An accepted event, ready to be stored and routed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub events_id: String,
    pub object_id: ObjectId,
    /// When the business action happened, with the emitter's offset kept.
    pub dt: OffsetDateTime,
    /// The data as compact JSON object text.
    pub data: String,
}

impl Event {
    /// The exact body sent to handlers, built by concatenation so the stored data
    /// text is not parsed again on every attempt.
    pub fn payload(&self) -> String {
        payload(
            &self.events_id,
            &self.object_id.to_json(),
            self.dt,
            &self.data,
        )
    }
}

/// Builds `{"event":{"dt":…,"events_id":…,"object_id":…},"data":…}`. `events_id`
/// is a validated dotted id and `dt` our own format, so neither needs escaping;
/// `object_id_json` and `data_json` are JSON text already.
pub fn payload(
    events_id: &str,
    object_id_json: &str,
    dt: OffsetDateTime,
    data_json: &str,
) -> String {
    let dt = timefmt::format_seconds(dt);
    let mut body = String::with_capacity(
        64 + events_id.len() + object_id_json.len() + data_json.len() + dt.len(),
    );
    body.push_str(r#"{"event":{"dt":""#);
    body.push_str(&dt);
    body.push_str(r#"","events_id":""#);
    body.push_str(events_id);
    body.push_str(r#"","object_id":"#);
    body.push_str(object_id_json);
    body.push_str(r#"},"data":"#);
    body.push_str(data_json);
    body.push('}');
    body
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn payload_is_the_reference_shape() {
        let event = Event {
            id: new_event_id(),
            events_id: "clients.update".into(),
            object_id: ObjectId::from_json(json!(12)).unwrap(),
            dt: timefmt::parse("2026-11-26T10:00:00Z").unwrap(),
            data: r#"{"id":12,"name":"My changed name"}"#.into(),
        };
        let parsed: serde_json::Value = serde_json::from_str(&event.payload()).unwrap();
        assert_eq!(
            parsed,
            json!({
                "event": { "dt": "2026-11-26T10:00:00+00:00", "events_id": "clients.update", "object_id": 12 },
                "data": { "id": 12, "name": "My changed name" }
            })
        );
    }

    #[test]
    fn object_ids_keep_their_json_type() {
        let n = ObjectId::from_json(json!(12)).unwrap();
        let s = ObjectId::from_json(json!("12")).unwrap();
        assert_eq!(n.to_json(), "12");
        assert_eq!(s.to_json(), "\"12\"");
        assert_eq!(n.key(), s.key());
        assert_eq!(ObjectId::from_json_text(&s.to_json()).unwrap(), s);
        for bad in [json!(null), json!(true), json!({}), json!([]), json!("")] {
            assert!(ObjectId::from_json(bad).is_err());
        }
    }
}

crate::wire_enum! {
    /// Where a delivery stands. `waiting` holds an ordered delivery behind an
    /// earlier unfinished one for the same object; `pending` is queued or being
    /// attempted; `success` and `failed` are final (until redelivered by hand).
    DeliveryState { Waiting = "waiting", Pending = "pending", Success = "success", Failed = "failed" }
}

crate::wire_enum! {
    /// How one call to a handler went. `Unknown`: the attempt was interrupted
    /// (its node stopped) before its outcome was recorded; it may have reached
    /// the receiver.
    ExecutionStatus { Success = "success", Fail = "fail", Unknown = "unknown" }
}
