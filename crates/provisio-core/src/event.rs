//! An emitted event and the exact body receivers get (DESIGN §4):
//! `{"event": {"dt", "events_id", "object_id"}, "data": {…}}`.

use std::fmt;

use serde::Serialize;
use time::OffsetDateTime;

use crate::timefmt;

/// The longest string object id accepted; ids are keys, not documents.
pub const MAX_OBJECT_ID_LEN: usize = 256;

/// The id of the object an event is about: an integer or a string. It keeps
/// the JSON type the emitter gave (`12` stays a number, `"12"` a string)
/// because receivers compare it as such, and an integer of any size is kept
/// exactly: `18446744073709551617` and `18446744073709551616` are two objects.
//
// A number is the exact text the emitter sent, never a float; emitted numbers
// must be integers (`ObjectId::parse`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ObjectId {
    Number(NumberText),
    String(String),
}

impl utoipa::PartialSchema for ObjectId {
    /// An integer with no format (ids may exceed 64 bits), or a string.
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, OneOfBuilder, Type};
        OneOfBuilder::new()
            .item(ObjectBuilder::new().schema_type(Type::Integer))
            .item(ObjectBuilder::new().schema_type(Type::String))
            .description(Some(
                "The object's id: an integer of any size (kept exactly) or a string; its JSON type is kept.",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ObjectId {}

/// The text of a JSON number, kept verbatim. Only [`ObjectId`]'s parsers and
/// the integer conversions make one, so it is always valid JSON.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct NumberText(String);

impl NumberText {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl From<u64> for ObjectId {
    fn from(n: u64) -> Self {
        Self::Number(NumberText(n.to_string()))
    }
}

impl From<i64> for ObjectId {
    fn from(n: i64) -> Self {
        Self::Number(NumberText(n.to_string()))
    }
}

/// Why an emitted number is not an object id: ids name things, and a float
/// has many spellings of one value (`1e3`, `1000.0`) that would split one
/// object's ordering, or one spelling for many values once rounded.
const NOT_AN_INTEGER: &str =
    "must be an integer or a string (no fraction, exponent or -0: 12, not 12.0 or 1.2e1)";

impl ObjectId {
    /// Parses an emitted `object_id` from its JSON text, as it stood in the
    /// request: a non-empty string of at most [`MAX_OBJECT_ID_LEN`]
    /// characters, or an integer of any size (at most as many digits), kept
    /// exactly. Fractions, exponents and `-0` are refused rather than guessed.
    pub fn parse(json: &str) -> Result<Self, String> {
        let json = json.trim();
        match json.as_bytes().first() {
            Some(b'"') => {
                let s: String =
                    serde_json::from_str(json).map_err(|_| "must be a JSON string".to_owned())?;
                if s.is_empty() {
                    Err("must not be empty".into())
                } else if crate::has_nul(&s) {
                    Err(crate::NUL_REFUSED.into())
                } else if s.len() > MAX_OBJECT_ID_LEN {
                    Err(format!("must be at most {MAX_OBJECT_ID_LEN} characters"))
                } else {
                    Ok(Self::String(s))
                }
            }
            Some(b'-' | b'0'..=b'9') => {
                if json.len() > MAX_OBJECT_ID_LEN {
                    Err(format!("must be at most {MAX_OBJECT_ID_LEN} characters"))
                } else if is_integer_text(json) && json != "-0" {
                    Ok(Self::Number(NumberText(json.to_owned())))
                } else {
                    Err(NOT_AN_INTEGER.into())
                }
            }
            _ => Err("must be a number or a string".into()),
        }
    }

    /// The object's identity for ordering and search: `12` and `"12"` are the
    /// same object.
    pub fn key(&self) -> String {
        match self {
            Self::Number(n) => n.0.clone(),
            Self::String(s) => s.clone(),
        }
    }

    /// The id as JSON text, as it goes into the payload and into storage.
    pub fn to_json(&self) -> String {
        match self {
            Self::Number(n) => n.0.clone(),
            Self::String(s) => serde_json::to_string(s).expect("a string always serializes"),
        }
    }

    /// Reads back what [`ObjectId::to_json`] wrote. Lenient where
    /// [`ObjectId::parse`] is strict: any JSON number or string, because
    /// rows written by older versions may hold a float's text.
    pub fn from_json_text(text: &str) -> Result<Self, String> {
        let text = text.trim();
        match serde_json::from_str(text).map_err(|e| e.to_string())? {
            serde_json::Value::Number(_) => Ok(Self::Number(NumberText(text.to_owned()))),
            serde_json::Value::String(s) => Ok(Self::String(s)),
            _ => Err("not a number or a string".into()),
        }
    }
}

/// True for `-?(0|[1-9][0-9]*)`: a JSON integer.
fn is_integer_text(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    match digits.as_bytes() {
        [b'0'] => true,
        [first, rest @ ..] => {
            first.is_ascii_digit() && *first != b'0' && rest.iter().all(u8::is_ascii_digit)
        }
        [] => false,
    }
}

impl Serialize for ObjectId {
    /// Numbers as numbers: native integers where they fit (so any serializer
    /// gets one), otherwise the exact text through serde_json's raw value.
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::String(s) => serializer.serialize_str(s),
            Self::Number(n) => {
                if let Ok(u) = n.0.parse::<u64>() {
                    serializer.serialize_u64(u)
                } else if let Ok(i) = n.0.parse::<i64>() {
                    serializer.serialize_i64(i)
                } else {
                    serde_json::value::RawValue::from_string(n.0.clone())
                        .map_err(serde::ser::Error::custom)?
                        .serialize(serializer)
                }
            }
        }
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
            object_id: ObjectId::from(12u64),
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
        let n = ObjectId::parse("12").unwrap();
        let s = ObjectId::parse(r#""12""#).unwrap();
        assert_eq!(n.to_json(), "12");
        assert_eq!(s.to_json(), "\"12\"");
        assert_eq!(n.key(), s.key());
        assert_eq!(ObjectId::from_json_text(&s.to_json()).unwrap(), s);
        assert_eq!(ObjectId::from_json_text(&n.to_json()).unwrap(), n);
        assert_eq!(serde_json::to_string(&n).unwrap(), "12");
        assert_eq!(serde_json::to_string(&s).unwrap(), r#""12""#);
        for bad in [
            "null",
            "true",
            "{}",
            "[]",
            r#""""#,
            "",
            "x",
            "+1",
            r#""a\u0000b""#,
        ] {
            assert!(ObjectId::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn integers_of_any_size_are_kept_exactly() {
        let big = "18446744073709551617";
        let id = ObjectId::parse(big).unwrap();
        assert_eq!(id.to_json(), big);
        assert_eq!(id.key(), big);
        assert_eq!(serde_json::to_string(&id).unwrap(), big);
        let neighbour = ObjectId::parse("18446744073709551616").unwrap();
        assert_ne!(id.key(), neighbour.key(), "two objects, not one float");
        for ok in ["0", "-1", "-18446744073709551617", "9223372036854775808"] {
            let id = ObjectId::parse(ok).unwrap();
            assert_eq!(id.to_json(), ok);
            assert_eq!(serde_json::to_string(&id).unwrap(), ok);
        }
        let longest = "9".repeat(MAX_OBJECT_ID_LEN);
        assert!(ObjectId::parse(&longest).is_ok());
        assert!(ObjectId::parse(&format!("{longest}9")).is_err());
    }

    #[test]
    fn fractions_exponents_and_minus_zero_are_refused() {
        for bad in [
            "12.5", "12.0", "1e3", "1E3", "1e-3", "-0", "-0.0", "01", "-", "1-", "0x10",
        ] {
            let err = ObjectId::parse(bad).unwrap_err();
            assert!(err.contains("integer"), "{bad}: {err}");
        }
    }

    #[test]
    fn stored_floats_from_older_versions_still_read() {
        for text in ["1.8446744073709552e19", "1000.0", "12"] {
            assert_eq!(ObjectId::from_json_text(text).unwrap().to_json(), text);
        }
        assert!(ObjectId::from_json_text("null").is_err());
    }

    proptest::proptest! {
        /// Any `object_id` text an emitter sends is judged without
        /// panicking, and what is accepted keeps the rules: an integer's
        /// exact text, or a non-empty string of bounded length.
        #[test]
        fn any_object_id_text_is_judged_without_panicking(
            text in proptest::prop_oneof![
                ".*",
                "-?[0-9]{0,300}(\\.[0-9]{0,3})?([eE][+-]?[0-9]{0,3})?",
                "\"([^\"\\\\]|\\\\[\"\\\\/bfnrtu])*\"",
            ],
        ) {
            match ObjectId::parse(&text) {
                Ok(ObjectId::Number(n)) => {
                    proptest::prop_assert!(is_integer_text(n.as_str()) && n.as_str() != "-0");
                    proptest::prop_assert!(n.as_str().len() <= MAX_OBJECT_ID_LEN);
                    proptest::prop_assert_eq!(n.as_str(), text.trim());
                }
                Ok(ObjectId::String(s)) => {
                    proptest::prop_assert!(!s.is_empty() && s.len() <= MAX_OBJECT_ID_LEN);
                }
                Err(e) => proptest::prop_assert!(!e.is_empty()),
            }
            let _ = ObjectId::from_json_text(&text);
        }

        /// Every integer, however large, is kept as the exact text sent:
        /// in the payload, in storage, in the API's JSON, and as its key.
        #[test]
        fn integers_round_trip_exactly(digits in "-?[1-9][0-9]{0,254}|0") {
            let id = ObjectId::parse(&digits).unwrap();
            proptest::prop_assert_eq!(id.to_json(), digits.clone());
            proptest::prop_assert_eq!(id.key(), digits.clone());
            proptest::prop_assert_eq!(serde_json::to_string(&id).unwrap(), digits.clone());
            proptest::prop_assert_eq!(ObjectId::from_json_text(&id.to_json()), Ok(id));
        }

        /// Every string id round-trips through its JSON text, and keys as
        /// itself.
        #[test]
        fn strings_round_trip(s in "[^\\x00\\n]{1,64}") {
            let id = ObjectId::parse(&serde_json::to_string(&s).unwrap()).unwrap();
            proptest::prop_assert_eq!(&id, &ObjectId::String(s.clone()));
            proptest::prop_assert_eq!(id.key(), s);
            proptest::prop_assert_eq!(ObjectId::from_json_text(&id.to_json()), Ok(id.clone()));
            proptest::prop_assert_eq!(serde_json::to_string(&id).unwrap(), id.to_json());
        }

        /// The payload is valid JSON carrying exactly the event's parts.
        #[test]
        fn the_payload_is_json_with_the_exact_object_id(
            digits in "-?[1-9][0-9]{0,40}",
            events_id in "[a-z]{1,8}(\\.[a-z_]{1,8}){0,3}",
        ) {
            let event = Event {
                id: new_event_id(),
                events_id: events_id.clone(),
                object_id: ObjectId::parse(&digits).unwrap(),
                dt: OffsetDateTime::UNIX_EPOCH,
                data: "{}".into(),
            };
            let body = event.payload();
            let parsed: serde_json::Value = serde_json::from_str(&body).unwrap();
            proptest::prop_assert_eq!(&parsed["event"]["events_id"], events_id.as_str());
            let expected = format!(r#""object_id":{digits}}}"#);
            proptest::prop_assert!(body.contains(&expected));
        }
    }
}

crate::wire_enum! {
    /// Where a delivery stands. `waiting` holds an ordered delivery behind an
    /// earlier unfinished one for the same object; `pending` is queued or being
    /// attempted; `held` is a pending delivery of a paused handler (derived
    /// when read, never stored: it is `pending` again the moment the handler
    /// resumes); `blocked` is an ordered delivery of an `on_exhausted: block`
    /// handler that used up its attempts: it keeps its object's line closed
    /// until it is redelivered (and succeeds) or skipped. `success`, `failed`
    /// and `superseded` (conflated away by a newer delivery of the same
    /// object) are final (until redelivered by hand).
    DeliveryState {
        Waiting = "waiting", Pending = "pending", Held = "held", Blocked = "blocked",
        Success = "success", Failed = "failed", Superseded = "superseded"
    }
}

crate::wire_enum! {
    /// How one call to a handler went. `Unknown`: the attempt was interrupted
    /// (its node stopped) before its outcome was recorded; it may have reached
    /// the receiver.
    ExecutionStatus { Success = "success", Fail = "fail", Unknown = "unknown" }
}

crate::wire_enum! {
    /// What a before-stage call decided, as the log keeps it: the action may
    /// go on with the data as it was (`unchanged`) or as the handler replaced
    /// it (`changed`), the handler refused it (`forbidden`), or the call
    /// failed (`failed`: its `on_failure` said what that meant). A forbidden
    /// call is a successful call whose answer was "no": its status is
    /// `success`, its verdict is what the log shows.
    Verdict { Unchanged = "unchanged", Changed = "changed", Forbidden = "forbidden", Failed = "failed" }
}

/// An event as filters and templates see it: the payload's shape,
/// `{"event": {"events_id", "object_id", "dt"}, "data": …}`, as a JSON value.
pub fn as_value(
    events_id: &str,
    object_id_json: &str,
    dt: &str,
    data_json: &str,
) -> Result<serde_json::Value, String> {
    let data: serde_json::Value =
        serde_json::from_str(data_json).map_err(|e| format!("the data is not JSON: {e}"))?;
    let object_id: serde_json::Value =
        serde_json::from_str(object_id_json).unwrap_or(serde_json::Value::Null);
    Ok(serde_json::json!({
        "event": { "events_id": events_id, "object_id": object_id, "dt": dt },
        "data": data,
    }))
}
