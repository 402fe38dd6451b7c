//! Handler filters and request templates, evaluated in process: what one of
//! each costs per event, and the worst accepted filters over a 1 MiB event.

use std::time::Instant;

use serde_json::json;

/// What one filter costs per event (the emit path evaluates it for every matching event), what one
/// template costs (each attempt renders it), and the worst a filter the save
/// check accepts can cost over the largest event the API takes (1 MiB).
pub fn run() {
    use provisio_core::event::ObjectId;
    use provisio_core::filter::{Filter, FilterInput};

    let object = ObjectId::parse("12345").unwrap();
    let time = |filter: &Filter, data: &str, runs: u32| {
        let started = Instant::now();
        for _ in 0..runs {
            // Per event: the conversion the emit does once, and one check.
            let input =
                FilterInput::new("clients.update", &object, "2026-11-27T10:00:00+00:00", data)
                    .unwrap();
            std::hint::black_box(filter.check(&input).ok());
        }
        started.elapsed() / runs
    };

    let typical = Filter::parse(r#"data.currency == "EUR" && data.balance < 0"#).unwrap();
    let data = json!({ "id": 12345, "name": "ACME Ltd", "currency": "EUR", "balance": -12.5,
                       "plan": "pro", "tags": ["vip", "b2b"] })
    .to_string();
    println!();
    println!("filters and templates: one of each per event, evaluated in process");
    println!(
        "  typical filter, {} B of data:  {:>7.1} µs per event",
        data.len(),
        time(&typical, &data, 20_000).as_secs_f64() * 1e6
    );

    // A request template: a PUT to the object's URL with a reshaped body.
    let template = provisio_core::request::RequestTemplate::compile(
        serde_json::from_value(json!({
            "method": "PUT",
            "url": "https://switch.example.net/api/v2/customers/{{ event.object_id }}",
            "body": "{\"name\": {{ data.name|tojson }}, \"currency\": {{ data.currency|tojson }}, \"credit\": {{ data.balance }}}"
        }))
        .unwrap(),
    )
    .unwrap();
    let runs = 20_000;
    let started = Instant::now();
    for _ in 0..runs {
        let rendered = template
            .render(
                "https://switch.example.net/api/v2/customers",
                "clients.update",
                "12345",
                "2026-11-27T10:00:00+00:00",
                &data,
            )
            .unwrap();
        std::hint::black_box(rendered);
    }
    println!(
        "  typical request template:       {:>7.1} µs per event",
        (started.elapsed() / runs).as_secs_f64() * 1e6
    );

    // The largest events: a list, or one string, filling the 1 MiB body
    // limit.
    let items: Vec<String> = (0..70_000).map(|i| format!("aaaaaaa{i}")).collect();
    let list = json!({ "l": items }).to_string();
    let string = json!({ "s": "a".repeat(1_000_000) }).to_string();
    let concat = (0..5).map(|_| "data.l").collect::<Vec<_>>().join(" + ");
    for (name, source, data) in [
        (
            "backtracking regex",
            r#"data.s.matches("^(a+)+b$")"#.to_owned(),
            &string,
        ),
        (
            "4 list concatenations",
            format!("size({concat}) > 0"),
            &list,
        ),
        (
            "map and filter",
            r#"size(data.l.map(x, x + x)) > size(data.l.filter(x, x.startsWith("a")))"#.to_owned(),
            &list,
        ),
    ] {
        assert!(data.len() <= 1024 * 1024);
        let filter = Filter::parse(&source).unwrap();
        println!(
            "  hostile: {name}, {} KiB of data: {:>7.1} ms",
            data.len() / 1024,
            time(&filter, data, 3).as_secs_f64() * 1e3
        );
    }
}
