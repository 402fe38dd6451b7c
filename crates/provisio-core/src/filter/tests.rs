use super::*;

fn input(data: &str) -> FilterInput {
    let object = ObjectId::parse("42").unwrap();
    FilterInput::new("clients.update", &object, "2026-11-27T10:00:00Z", data).unwrap()
}

fn passes(filter: &str, data: &str) -> Result<bool, String> {
    Filter::parse(filter)?.check(&input(data))
}

#[test]
fn a_filter_sees_the_events_fields_and_its_data() {
    let data = r#"{"currency":"EUR","balance":-5,"tags":["vip","b2b"]}"#;
    assert_eq!(
        passes(r#"data.currency == "EUR" && data.balance < 0"#, data),
        Ok(true)
    );
    assert_eq!(passes(r#"data.currency == "USD""#, data), Ok(false));
    assert_eq!(
        passes(r#"event.events_id.startsWith("clients.")"#, data),
        Ok(true)
    );
    assert_eq!(passes("event.object_id == 42", data), Ok(true));
    assert_eq!(passes(r#"data.tags.exists(t, t == "vip")"#, data), Ok(true));
    assert_eq!(
        passes(r#"has(data.missing) && data.missing > 1"#, data),
        Ok(false)
    );
    assert_eq!(passes(r#""vip" in data.tags"#, data), Ok(true));
    assert_eq!(
        passes(r#"data.currency.matches("^[A-Z]{3}$")"#, data),
        Ok(true)
    );
}

#[test]
fn a_missing_key_or_a_result_that_is_not_a_boolean_is_an_error_not_a_pass() {
    assert!(passes("data.missing == 1", "{}").is_err());
    let err = passes("data.balance", r#"{"balance":3}"#).unwrap_err();
    assert!(err.contains("not true or false"), "{err}");
}

#[test]
fn a_syntax_error_names_its_line_and_column() {
    let err = Filter::parse("data.a ==").unwrap_err();
    assert!(err.starts_with("line 1, column "), "{err}");
    let err = Filter::parse("data.a == 1 &&\n  nope.b").unwrap_err();
    assert!(
        err.starts_with("line 2, column 3: unknown variable nope"),
        "{err}"
    );
}

#[test]
fn what_could_make_evaluation_unbounded_is_refused_when_saved() {
    for (filter, expected) in [
        ("data.a.all(x, data.a.all(y, true))", "nested"),
        (
            "data.a.exists(x, x == data.b)",
            "inside all/exists/map/filter",
        ),
        (
            "data.a.map(x, event.dt).size() > 0",
            "inside all/exists/map/filter",
        ),
        (
            r#"data.a.exists(x, x.matches("^a+$"))"#,
            "matches cannot be used inside",
        ),
        (
            "size(data.a + data.a + data.a + data.a + data.a + data.a) > 0",
            "`+` operators",
        ),
        ("", "must not be empty"),
    ] {
        let err = Filter::parse(filter).unwrap_err();
        assert!(err.contains(expected), "{filter}: {err}");
    }
    let long = format!("data.a == \"{}\"", "x".repeat(MAX_FILTER_LEN));
    assert!(Filter::parse(&long).unwrap_err().contains("at most"));
}

#[test]
fn filters_compare_by_their_source() {
    assert_eq!(
        Filter::parse(" data.a == 1 ").unwrap(),
        Filter::parse("data.a == 1").unwrap()
    );
    assert_eq!(
        Filter::parse("data.a == 1").unwrap().as_str(),
        "data.a == 1"
    );
}
