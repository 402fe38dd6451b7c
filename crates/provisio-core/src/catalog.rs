//! Event types (`clients.create`), the built-in catalog seeded on first start, and
//! the patterns a handler subscribes with (`clients.create`, `clients.*`, `*`).

use std::fmt;

/// The longest event type id accepted; long enough for any dotted name a billing
/// platform uses, short enough to index cheaply.
pub const MAX_EVENT_TYPE_LEN: usize = 128;

/// One type in the catalog.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventType {
    /// The dotted id, `events_id` on the wire.
    pub id: String,
    /// The heading the web section groups types under ("Clients", "Accounts", …).
    pub group: String,
    pub description: String,
    /// True where the event's data is always `{}` (e.g. `clients.delete`).
    pub empty_data: bool,
    /// True for types seeded from [`BUILTIN`]; operators add the others.
    pub builtin: bool,
    /// Sample `data` (a JSON object, as text) for previews and test sends.
    pub example: Option<String>,
}

/// Checks an event type id: lowercase dotted segments, each starting with a
/// letter and made of `a-z`, `0-9` and `_` (`clients.balance_zero`).
pub fn validate_event_type_id(id: &str) -> Result<(), String> {
    if id.is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > MAX_EVENT_TYPE_LEN {
        return Err(format!("must be at most {MAX_EVENT_TYPE_LEN} characters"));
    }
    for segment in id.split('.') {
        let mut chars = segment.chars();
        let starts_with_letter = chars.next().is_some_and(|c| c.is_ascii_lowercase());
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !starts_with_letter || !rest_ok {
            return Err(
                "must be lowercase dotted segments such as clients.create (a-z, 0-9, _; each segment starts with a letter)"
                    .into(),
            );
        }
    }
    Ok(())
}

/// What a handler subscribes to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventPattern {
    /// `*`: every event type.
    All,
    /// `clients.*`: every type under the prefix. Holds the prefix with its dot
    /// (`clients.`) so matching is one `starts_with`.
    Prefix(String),
    /// One exact type.
    Exact(String),
}

impl EventPattern {
    /// Parses the pattern syntax only; whether an exact type exists is the
    /// catalog's question (see [`EventPattern::check_against`]).
    pub fn parse(s: &str) -> Result<Self, String> {
        if s == "*" {
            return Ok(Self::All);
        }
        if let Some(prefix) = s.strip_suffix(".*") {
            validate_event_type_id(prefix).map_err(|e| format!("pattern prefix {e}"))?;
            return Ok(Self::Prefix(format!("{prefix}.")));
        }
        validate_event_type_id(s)
            .map_err(|e| format!("{e}; or a pattern such as clients.* or *"))?;
        Ok(Self::Exact(s.to_owned()))
    }

    pub fn matches(&self, events_id: &str) -> bool {
        match self {
            Self::All => true,
            Self::Prefix(prefix) => events_id.starts_with(prefix.as_str()),
            Self::Exact(id) => id == events_id,
        }
    }

    /// Refuses a pattern that can never fire: an exact type missing from the
    /// catalog, or a prefix no catalog type starts with (a typo such as
    /// `clinets.*` would otherwise fail silently forever).
    pub fn check_against<'a>(
        &self,
        mut catalog: impl Iterator<Item = &'a str>,
    ) -> Result<(), String> {
        match self {
            Self::All => Ok(()),
            Self::Exact(id) if catalog.any(|t| t == id) => Ok(()),
            Self::Exact(id) => Err(format!(
                "unknown event type {id}; add it to the catalog first"
            )),
            Self::Prefix(_) if catalog.any(|t| self.matches(t)) => Ok(()),
            Self::Prefix(_) => Err(format!("no event type in the catalog matches {self}")),
        }
    }
}

impl fmt::Display for EventPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::All => f.write_str("*"),
            Self::Prefix(prefix) => write!(f, "{prefix}*"),
            Self::Exact(id) => f.write_str(id),
        }
    }
}

/// `(id, group, description, empty_data)` for every built-in type (DESIGN §3).
/// Their example data is [`builtin_example`].
const BUILTIN_ROWS: &[(&str, &str, &str, bool)] = &[
    ("clients.create", "Clients", "A client was created", false),
    (
        "clients.update",
        "Clients",
        "A client's fields changed",
        false,
    ),
    (
        "clients.custom_fields.update",
        "Clients",
        "A client's custom fields changed",
        false,
    ),
    ("clients.archive", "Clients", "A client was archived", true),
    ("clients.delete", "Clients", "A client was deleted", true),
    (
        "clients.balance_zero",
        "Clients",
        "A client's balance became zero or less",
        true,
    ),
    (
        "clients.balance_notzero",
        "Clients",
        "A client's balance became positive again",
        true,
    ),
    (
        "clients.accounts.create",
        "Accounts",
        "An account was created",
        false,
    ),
    (
        "clients.accounts.update",
        "Accounts",
        "An account's fields changed",
        false,
    ),
    (
        "clients.accounts.delete",
        "Accounts",
        "An account was deleted",
        true,
    ),
    (
        "clients.subscriptions.assign",
        "Subscriptions",
        "A subscription was assigned",
        false,
    ),
    (
        "clients.subscriptions.activate",
        "Subscriptions",
        "A subscription was activated",
        false,
    ),
    (
        "clients.subscriptions.deactivate",
        "Subscriptions",
        "A subscription was deactivated",
        false,
    ),
    (
        "clients.subscriptions.renew",
        "Subscriptions",
        "A subscription was renewed",
        false,
    ),
    (
        "clients.subscriptions.close",
        "Subscriptions",
        "A subscription was closed",
        false,
    ),
    (
        "email_rates_manager.import",
        "Email Rates Manager",
        "A rates import ran",
        false,
    ),
    (
        "importd.process_success",
        "Import Manager",
        "An import job succeeded",
        false,
    ),
    (
        "importd.process_failed",
        "Import Manager",
        "An import job failed",
        false,
    ),
    (
        HANDLER_PAUSED,
        "provisio",
        "A handler paused itself after consecutive failures (automatic pause)",
        false,
    ),
];

/// The built-in type provisio emits itself when a handler's automatic pause
/// trips; its data names the handler (`handler_id`, `name`) and the `reason`.
pub const HANDLER_PAUSED: &str = "provisio.handler.paused";

/// The `data` a billing platform sends with a built-in type, as JSON text:
/// what the catalog shows and a handler test sends by default. `{}` for the
/// types whose data is always empty.
pub fn builtin_example(id: &str) -> &'static str {
    match id {
        "clients.create" => {
            r#"{"id":12,"name":"ACME Telecom Ltd","login":"acme","email":"billing@acme.example","currency":"EUR","balance":150.25,"credit_limit":0,"status":"active","tariff_id":3,"created_at":"2026-11-27T10:00:00+00:00"}"#
        }
        "clients.update" => {
            r#"{"id":12,"name":"ACME Telecom Group Ltd","login":"acme","email":"billing@acme.example","currency":"EUR","balance":150.25,"credit_limit":0,"status":"active","tariff_id":3,"created_at":"2026-11-27T10:00:00+00:00"}"#
        }
        "clients.custom_fields.update" => {
            r#"{"id":12,"custom_fields":{"sip_realm":"acme.voip.example","account_manager":"J. Doe"}}"#
        }
        "clients.accounts.create" => {
            r#"{"id":345,"client_id":12,"login":"10012345","type":"sip","status":"active","caller_id":"+442071234567","max_sessions":4,"tariff_id":3}"#
        }
        "clients.accounts.update" => {
            r#"{"id":345,"client_id":12,"login":"10012345","type":"sip","status":"active","caller_id":"+442071234567","max_sessions":8,"tariff_id":3}"#
        }
        "clients.subscriptions.assign" => {
            r#"{"id":78,"client_id":12,"service_id":5,"service_name":"Unlimited UK calls","start_date":"2026-11-01","end_date":"2026-11-30","price":19.99,"currency":"EUR","status":"assigned"}"#
        }
        "clients.subscriptions.activate" => {
            r#"{"id":78,"client_id":12,"service_id":5,"service_name":"Unlimited UK calls","start_date":"2026-11-01","end_date":"2026-11-30","price":19.99,"currency":"EUR","status":"active"}"#
        }
        "clients.subscriptions.deactivate" => {
            r#"{"id":78,"client_id":12,"service_id":5,"service_name":"Unlimited UK calls","start_date":"2026-11-01","end_date":"2026-11-30","price":19.99,"currency":"EUR","status":"inactive"}"#
        }
        "clients.subscriptions.renew" => {
            r#"{"id":78,"client_id":12,"service_id":5,"service_name":"Unlimited UK calls","start_date":"2026-12-01","end_date":"2026-12-31","price":19.99,"currency":"EUR","status":"active"}"#
        }
        "clients.subscriptions.close" => {
            r#"{"id":78,"client_id":12,"service_id":5,"service_name":"Unlimited UK calls","start_date":"2026-11-01","end_date":"2026-11-30","price":19.99,"currency":"EUR","status":"closed"}"#
        }
        "email_rates_manager.import" => {
            r#"{"id":901,"file":"rates-2026-11.csv","rates_table_id":7,"rows_total":12840,"rows_imported":12840,"rows_failed":0,"started_at":"2026-11-27T09:58:12+00:00","finished_at":"2026-11-27T09:58:40+00:00"}"#
        }
        "importd.process_success" => {
            r#"{"id":902,"type":"cdrs","file":"cdrs-2026-11-26.csv","rows_total":55012,"rows_imported":55012,"rows_failed":0,"started_at":"2026-11-27T02:00:00+00:00","finished_at":"2026-11-27T02:03:31+00:00"}"#
        }
        "importd.process_failed" => {
            r#"{"id":903,"type":"cdrs","file":"cdrs-2026-11-27.csv","rows_total":0,"rows_imported":0,"rows_failed":0,"error":"line 1: unknown column 'callee'","started_at":"2026-11-27T03:00:00+00:00","finished_at":"2026-11-27T03:00:02+00:00"}"#
        }
        HANDLER_PAUSED => {
            r#"{"handler_id":3,"name":"Softswitch sync","reason":"12 consecutive failures over 10m; last: connection refused"}"#
        }
        _ => "{}",
    }
}

/// The catalog every installation starts with.
pub fn builtin() -> Vec<EventType> {
    BUILTIN_ROWS
        .iter()
        .map(|&(id, group, description, empty_data)| EventType {
            id: id.into(),
            group: group.into(),
            description: description.into(),
            empty_data,
            builtin: true,
            example: Some(builtin_example(id).to_owned()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_example_is_a_json_object_and_empty_where_the_data_is() {
        for t in builtin() {
            let example = t.example.unwrap();
            let value: serde_json::Value = serde_json::from_str(&example).unwrap();
            let fields = value.as_object().unwrap().len();
            assert_eq!(fields == 0, t.empty_data, "{}: {example}", t.id);
        }
    }

    #[test]
    fn builtin_ids_are_valid_and_unique() {
        let all = builtin();
        for t in &all {
            validate_event_type_id(&t.id).unwrap();
        }
        let mut ids: Vec<_> = all.iter().map(|t| t.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), all.len());
    }

    #[test]
    fn ids_are_lowercase_dotted_segments() {
        assert!(validate_event_type_id("clients.balance_zero").is_ok());
        assert!(validate_event_type_id("ping").is_ok());
        for bad in [
            "",
            "Clients.create",
            "clients..create",
            ".clients",
            "clients.",
            "clients.1x",
            "a b",
            "clients-create",
        ] {
            assert!(validate_event_type_id(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn patterns_match_as_documented() {
        let prefix = EventPattern::parse("clients.*").unwrap();
        assert!(prefix.matches("clients.create"));
        assert!(prefix.matches("clients.accounts.delete"));
        assert!(!prefix.matches("clientsx.create"));
        assert!(!prefix.matches("importd.process_success"));
        assert!(EventPattern::parse("*").unwrap().matches("anything.at_all"));
        assert!(
            EventPattern::parse("clients.create")
                .unwrap()
                .matches("clients.create")
        );
        assert_eq!(prefix.to_string(), "clients.*");
        for bad in ["clients.**", "*.create", "clients*", "", "Clients.*"] {
            assert!(EventPattern::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[test]
    fn patterns_that_can_never_fire_are_refused() {
        let ids = ["clients.create", "importd.process_success"];
        assert!(
            EventPattern::parse("clients.*")
                .unwrap()
                .check_against(ids.into_iter())
                .is_ok()
        );
        assert!(
            EventPattern::parse("clinets.*")
                .unwrap()
                .check_against(ids.into_iter())
                .is_err()
        );
        assert!(
            EventPattern::parse("clients.nope")
                .unwrap()
                .check_against(ids.into_iter())
                .is_err()
        );
    }

    /// Text an outsider may send as an `events_id` or a handler pattern:
    /// anything at all, and things shaped like ids and patterns.
    fn pattern_text() -> impl proptest::strategy::Strategy<Value = String> {
        proptest::prop_oneof![
            ".*",
            "[a-z_0-9.*]{0,30}",
            "([a-z][a-z0-9_]{0,8}\\.){0,4}([a-z][a-z0-9_]{0,8}|\\*)",
        ]
    }

    proptest::proptest! {
        /// Never panics; an accepted id satisfies every rule it checks.
        #[test]
        fn event_type_ids_are_checked_without_panicking(id in pattern_text()) {
            if validate_event_type_id(&id).is_ok() {
                proptest::prop_assert!(!id.is_empty() && id.len() <= MAX_EVENT_TYPE_LEN);
                for segment in id.split('.') {
                    proptest::prop_assert!(segment.starts_with(|c: char| c.is_ascii_lowercase()));
                    proptest::prop_assert!(segment
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'));
                }
            }
        }

        /// A parsed pattern prints back to text that parses to itself, and
        /// matches what it says it matches.
        #[test]
        fn patterns_round_trip_and_match_as_written(
            text in pattern_text(),
            events_id in pattern_text(),
        ) {
            let Ok(pattern) = EventPattern::parse(&text) else {
                return Ok(());
            };
            proptest::prop_assert_eq!(pattern.to_string(), text.clone());
            proptest::prop_assert_eq!(EventPattern::parse(&pattern.to_string()), Ok(pattern.clone()));
            let expected = match text.strip_suffix('*') {
                Some(prefix) => events_id.starts_with(prefix),
                None => events_id == text,
            };
            proptest::prop_assert_eq!(pattern.matches(&events_id), expected);
            let _ = pattern.check_against(builtin().iter().map(|t| t.id.as_str()));
        }
    }
}
