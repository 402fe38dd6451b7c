//! Handler validation: examples, and properties over arbitrary drafts.

use std::time::Duration;

use super::*;

fn draft() -> HandlerDraft {
    HandlerDraft {
        name: "Softswitch sync".into(),
        events_id: "clients.create".into(),
        stage: Stage::After,
        status: Status::Enabled,
        priority: 10,
        kind: HandlerKind::Http,
        target: "https://switch.example.net/hooks".into(),
        args: vec![],
        headers: BTreeMap::new(),
        timeout_ms: 10_000,
        max_attempts: 10,
        ordered: true,
        on_failure: OnFailure::Forbid,
        filter: String::new(),
        request: None,
        on_exhausted: OnExhausted::Block,
        conflate: false,
        auto_pause: None,
        max_in_flight: None,
        rate_limit: None,
    }
}

fn validate(d: HandlerDraft) -> Result<HandlerSpec, FieldErrors> {
    let types = vec!["clients.create".to_string()];
    let no_scripts = |_: &str| Err("no scripts here".to_string());
    d.validate(&ValidationContext {
        event_types: &types,
        check_script: &no_scripts,
    })
}

#[test]
fn a_good_draft_validates() {
    let spec = validate(draft()).unwrap();
    assert_eq!(spec.events_id.to_string(), "clients.create");
    assert_eq!(spec.priority, 10);
}

#[test]
fn every_bad_field_is_reported_at_once() {
    let mut d = draft();
    d.name = "  ".into();
    d.events_id = "clients.nope".into();
    d.target = "ftp://x".into();
    d.timeout_ms = 0;
    d.max_attempts = 0;
    d.headers.insert("Webhook-Signature".into(), "x".into());
    let e = validate(d).unwrap_err();
    for field in [
        "name",
        "events_id",
        "target",
        "timeout_ms",
        "max_attempts",
        "headers",
    ] {
        assert!(e.get(field).is_some(), "{field} not reported: {e:?}");
    }
}

#[test]
fn passwords_in_targets_are_masked() {
    for (target, shown) in [
        ("http://user:pw@host/x?a=1", "http://user:***@host/x?a=1"),
        (
            "https://u:p%40ss@h.example:8443/",
            "https://u:***@h.example:8443/",
        ),
        ("http://:pw@host/", "http://:***@host/"),
        (
            "http://sk_live_123@api.example.net/v1",
            "http://***@api.example.net/v1",
        ),
        ("http://user:***@host/", "http://user:***@host/"),
        ("http://host/path", "http://host/path"),
        ("HTTP://Host/Path", "HTTP://Host/Path"),
        ("hooks/sync.sh", "hooks/sync.sh"),
        ("not a url", "not a url"),
    ] {
        assert_eq!(masked_target(target), shown, "{target}");
        assert_eq!(masked_target(shown), shown, "masking twice: {shown}");
    }
}

#[test]
fn script_paths_must_stay_inside() {
    for bad in ["../x.sh", "/etc/passwd", "a/../../b", ""] {
        assert!(validate_script_target(bad).is_err(), "{bad} accepted");
    }
    assert!(validate_script_target("hooks/sync.sh").is_ok());
}

use proptest::prelude::*;

/// Drafts as an outsider may send them: each field mostly near what is
/// valid (so valid drafts come up often) and sometimes arbitrary, so both
/// sides of every rule are reached.
fn any_draft() -> impl Strategy<Value = HandlerDraft> {
    let text = |shaped: &'static str| prop_oneof![5 => shaped, 1 => ".*"];
    let number = |range: std::ops::RangeInclusive<i64>| {
        let (lo, hi) = (*range.start(), *range.end());
        prop_oneof![5 => (lo - 2)..=(hi + 2), 1 => any::<i64>()]
    };
    let headers = prop_oneof![
        5 => proptest::collection::btree_map("[A-Za-z-]{1,20}", "[ -~]{0,20}", 0..3),
        1 => proptest::collection::btree_map(
            prop_oneof![Just("Webhook-Signature".to_owned()), ".*"],
            ".{0,20}",
            0..=34,
        ),
    ];
    let args = prop_oneof![
        5 => proptest::collection::vec("[a-z-]{0,10}", 0..3),
        1 => proptest::collection::vec(".{0,10}", 0..=34),
    ];
    (
        (
            text(" ?[A-Za-z ]{0,205} ?"),
            text("clients\\.(create|\\*|nope)|\\*"),
            proptest::sample::select(Stage::ALL),
            proptest::sample::select(Status::ALL),
            number(PRIORITY_RANGE),
            proptest::sample::select(HandlerKind::ALL),
        ),
        (
            (
                prop_oneof![
                    4 => " ?https?://[a-z0-9.-]{1,20}(:[0-9]{1,5})?(/[a-z./]{0,10})? ?",
                    1 => "(https?|ftp)://[a-z0-9.:@%\\[\\]-]{0,30}(/.{0,10})?",
                    1 => ".*",
                ],
                text("(\\.\\./|/)?[a-z]{1,8}(/[a-z.]{1,8}){0,2}"),
                // Mostly a target, args and headers that suit the kind.
                proptest::bool::weighted(0.8),
            ),
            args,
            headers,
            number(TIMEOUT_MS_RANGE),
            number(MAX_ATTEMPTS_RANGE),
            any::<bool>(),
            proptest::sample::select(OnFailure::ALL),
        ),
    )
        .prop_map(
            |(
                (name, events_id, stage, status, priority, kind),
                (
                    (url, path, suited),
                    mut args,
                    mut headers,
                    timeout_ms,
                    max_attempts,
                    ordered,
                    on_failure,
                ),
            )| {
                let target = match (kind, suited) {
                    (HandlerKind::Http, true) | (HandlerKind::Script, false) => url,
                    _ => path,
                };
                if suited {
                    match kind {
                        HandlerKind::Http => args.clear(),
                        HandlerKind::Script => headers.clear(),
                    }
                }
                HandlerDraft {
                    name,
                    events_id,
                    stage,
                    status,
                    priority,
                    kind,
                    target,
                    args,
                    headers,
                    timeout_ms,
                    max_attempts,
                    ordered,
                    on_failure,
                    filter: String::new(),
                    request: None,
                    on_exhausted: OnExhausted::Block,
                    conflate: false,
                    auto_pause: None,
                    max_in_flight: None,
                    rate_limit: None,
                }
            },
        )
}

/// Accepts scripts whose path has no `missing` in it (the engine's
/// file-system check, stood in for).
fn validate_any(d: HandlerDraft) -> Result<HandlerSpec, FieldErrors> {
    let types = vec!["clients.create".to_string()];
    let scripts = |t: &str| {
        if t.contains("missing") {
            Err("no such script".to_string())
        } else {
            Ok(())
        }
    };
    d.validate(&ValidationContext {
        event_types: &types,
        check_script: &scripts,
    })
}

proptest! {
    /// A URL's password never survives masking, whatever it is made of,
    /// and masking any text twice is masking it once.
    #[test]
    fn masked_targets_hide_the_password(
        user in "[a-z]{0,8}",
        password in "PW[A-Za-z0-9._~!$&'()*+,;=%-]{6,16}",
        host in "[a-z]{1,10}\\.example(:[0-9]{1,4})?",
        path in "(/[a-z0-9%?=&#.]{0,12}){0,3}",
        text in ".*",
    ) {
        let target = format!("https://{user}:{password}@{host}{path}");
        let shown = masked_target(&target);
        prop_assert!(!shown.contains(&password), "{target} shown as {shown}");
        prop_assert!(shown.contains(":***@"), "{target} shown as {shown}");
        let twice = masked_target(&text);
        prop_assert_eq!(masked_target(&twice), twice.clone());
    }

    /// Any draft is judged without panicking; a valid one keeps every
    /// rule, and validating it again (a PATCH that changes nothing)
    /// gives the same handler.
    #[test]
    fn any_draft_is_judged_and_valid_ones_keep_the_rules(draft in any_draft()) {
        let spec = match validate_any(draft) {
            Ok(spec) => spec,
            Err(errors) => {
                prop_assert!(!errors.is_empty());
                return Ok(());
            }
        };
        prop_assert_eq!(spec.name.trim(), spec.name.as_str());
        prop_assert!(!spec.name.is_empty() && spec.name.chars().count() <= MAX_NAME_LEN);
        prop_assert!(PRIORITY_RANGE.contains(&i64::from(spec.priority)));
        prop_assert!(TIMEOUT_MS_RANGE.contains(&i64::from(spec.timeout_ms)));
        prop_assert!(MAX_ATTEMPTS_RANGE.contains(&i64::from(spec.max_attempts)));
        prop_assert!(spec.target.len() <= MAX_TARGET_LEN);
        prop_assert!(spec.headers.len() <= MAX_HEADERS);
        for name in spec.headers.keys() {
            prop_assert!(!RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()));
        }
        match spec.kind {
            HandlerKind::Http => {
                let url = url::Url::parse(&spec.target).unwrap();
                prop_assert!(matches!(url.scheme(), "http" | "https"));
                prop_assert!(url.host().is_some());
                prop_assert!(spec.args.is_empty());
            }
            HandlerKind::Script => {
                prop_assert!(validate_script_target(&spec.target).is_ok());
                prop_assert!(spec.headers.is_empty());
                prop_assert!(spec.args.len() <= MAX_ARGS);
                prop_assert!(spec.args.iter().all(|a| !a.contains('\0')));
            }
        }
        prop_assert_eq!(validate_any(HandlerDraft::from(&spec)), Ok(spec.clone()));
        // What the log shows of it is masked idempotently.
        let shown = masked_target(&spec.target);
        prop_assert_eq!(masked_target(&shown), shown.clone());
    }
}

#[test]
fn a_filter_is_checked_with_the_rest_and_kept_as_written() {
    let mut d = draft();
    d.filter = "data.balance <".into();
    let errors = validate(d).unwrap_err();
    assert!(errors.get("filter").unwrap().starts_with("line 1, column "));

    let mut d = draft();
    d.filter = "  data.balance < 0  ".into();
    let spec = validate(d).unwrap();
    assert_eq!(spec.filter.as_ref().unwrap().as_str(), "data.balance < 0");
    assert_eq!(HandlerDraft::from(&spec).filter, "data.balance < 0");

    let mut d = draft();
    d.filter = "   ".into();
    assert_eq!(validate(d).unwrap().filter, None);
}

#[test]
fn the_automatic_pause_is_checked_field_by_field() {
    let mut d = draft();
    d.auto_pause = Some(AutoPauseDraft {
        failures: 12,
        after: "10m".into(),
        probe_every: "5m".into(),
    });
    let spec = validate(d.clone()).unwrap();
    assert_eq!(
        spec.auto_pause,
        Some(AutoPause {
            failures: 12,
            after: Duration::from_secs(600),
            probe_every: Duration::from_secs(300),
        })
    );
    assert_eq!(HandlerDraft::from(&spec).auto_pause, d.auto_pause);
    d.auto_pause = Some(AutoPauseDraft {
        failures: 0,
        after: "soon".into(),
        probe_every: "0s".into(),
    });
    let e = validate(d).unwrap_err();
    for field in [
        "auto_pause.failures",
        "auto_pause.after",
        "auto_pause.probe_every",
    ] {
        assert!(e.get(field).is_some(), "{field} not reported: {e:?}");
    }
}
