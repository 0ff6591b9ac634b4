//! The `boundaries:` syntax: typed at load, each with its promise; the one-sink `effects:`
//! form keeps its one undeclared boundary; mistakes located with their fix.

use std::path::Path;

use super::{parse_plan, Semantics, SinkKind, DEFAULT_BOUNDARY};

const HEAD: &str = "name: t\nbroker: { kind: kafka }\nworkload: { messages: 10 }\n\
consumer: { command: [c] }\n";

fn error_of(src: &str) -> String {
    parse_plan(Path::new("p.yaml"), src)
        .unwrap_err()
        .to_string()
}

#[test]
fn boundaries_load_with_their_own_promises() {
    let src = format!(
        "{HEAD}boundaries:\n  - name: orders-out\n    sink: file\n    expect: exactly-once\n  \
         - name: email\n    sink: http\n    id: header:X-Id\nexpect: at-least-once\n"
    );
    let plan = parse_plan(Path::new("p.yaml"), &src).unwrap();
    let rows: Vec<_> = plan
        .boundaries()
        .iter()
        .map(|b| (b.name.as_str(), b.sink, b.expect, b.declared))
        .collect();
    assert_eq!(
        rows,
        [
            ("orders-out", SinkKind::File, Semantics::ExactlyOnce, true),
            ("email", SinkKind::Http, Semantics::AtLeastOnce, true),
        ]
    );
}

#[test]
fn the_one_sink_form_is_one_undeclared_boundary() {
    let src = format!("{HEAD}effects: {{ sink: http }}\nexpect: at-most-once\n");
    let plan = parse_plan(Path::new("p.yaml"), &src).unwrap();
    let [b] = plan.boundaries() else {
        panic!("one boundary");
    };
    assert_eq!((b.name.as_str(), b.declared), (DEFAULT_BOUNDARY, false));
    assert_eq!(
        b.event_name(),
        None,
        "its events name no boundary, as before"
    );
    assert_eq!(b.expect, Semantics::AtMostOnce);
}

#[test]
fn mistakes_are_located_with_their_fix() {
    let both = format!(
        "{HEAD}effects: {{ sink: http }}\nboundaries:\n  - {{ name: a, sink: http }}\nexpect: at-least-once\n"
    );
    assert!(
        error_of(&both).contains("either `effects`"),
        "{}",
        error_of(&both)
    );
    let neither = format!("{HEAD}expect: at-least-once\n");
    assert!(error_of(&neither).contains("say where effects are observed"));
    let no_promise = format!("{HEAD}boundaries:\n  - {{ name: a, sink: http }}\n");
    let e = error_of(&no_promise);
    assert!(
        e.starts_with("p.yaml:6:") && e.contains("what this boundary promises"),
        "{e}"
    );
    let twice = format!(
        "{HEAD}boundaries:\n  - {{ name: a, sink: http }}\n  - {{ name: A, sink: file }}\nexpect: at-least-once\n"
    );
    assert!(
        error_of(&twice).contains("named twice"),
        "{}",
        error_of(&twice)
    );
    let headers = format!(
        "{HEAD}boundaries:\n  - {{ name: a, sink: file, id: 'header:X' }}\nexpect: at-least-once\n"
    );
    assert!(error_of(&headers).contains("without headers"));
    let no_expect = format!("{HEAD}effects: {{ sink: http }}\n");
    assert!(error_of(&no_expect).contains("what the consumer promises"));
}

#[test]
fn a_kafka_topic_boundary_has_its_output_topic_and_only_it_does() {
    let src = format!("{HEAD}boundaries:\n  - {{ name: out, sink: kafka-topic, id: key }}\nexpect: exactly-once\n");
    let plan = parse_plan(Path::new("p.yaml"), &src).unwrap();
    let output = plan.boundaries()[0]
        .output
        .clone()
        .expect("an output topic");
    assert_eq!(output.topic, "out-{run}");
    assert_eq!(output.isolation, super::TopicIsolation::ReadCommitted);
    assert_eq!(output.partitions, 3, "the input topic's partitions");
    let topic_on_http = format!(
        "{HEAD}boundaries:\n  - {{ name: a, sink: http, topic: t }}\nexpect: at-least-once\n"
    );
    assert!(error_of(&topic_on_http).contains("`topic` is for `sink: kafka-topic`"));
    let key_on_http = format!(
        "{HEAD}boundaries:\n  - {{ name: a, sink: http, id: key }}\nexpect: at-least-once\n"
    );
    assert!(error_of(&key_on_http).contains("only the `kafka-topic` sink"));
    let amqp = src.replace(
        "broker: { kind: kafka }",
        "broker: { kind: amqp, url: 'amqp://h' }",
    );
    assert!(
        error_of(&amqp).contains("broker.kind: kafka"),
        "{}",
        error_of(&amqp)
    );
}

#[test]
fn the_one_effects_sink_on_an_output_topic_has_its_output_topic_as_a_boundary_does() {
    let src = format!(
        "{HEAD}effects:\n  sink: kafka-topic\n  topic: out-{{run}}\n  isolation: read_uncommitted\n  \
         partitions: 2\n  id: header:exactly-id\nexpect: at-least-once\n"
    );
    let plan = parse_plan(Path::new("p.yaml"), &src).unwrap();
    let b = &plan.boundaries()[0];
    assert!(!b.declared);
    let output = b.output.clone().expect("an output topic");
    assert_eq!(output.topic, "out-{run}");
    assert_eq!(output.isolation, super::TopicIsolation::ReadUncommitted);
    assert_eq!(output.partitions, 2);
    let defaults =
        format!("{HEAD}effects: {{ sink: kafka-topic, id: key }}\nexpect: at-least-once\n");
    let plan = parse_plan(Path::new("p.yaml"), &defaults).unwrap();
    let output = plan.boundaries()[0]
        .output
        .clone()
        .expect("an output topic");
    assert_eq!(output.topic, format!("{DEFAULT_BOUNDARY}-{{run}}"));
    assert_eq!(output.isolation, super::TopicIsolation::ReadCommitted);
    let topic_on_http =
        format!("{HEAD}effects: {{ sink: http, topic: t }}\nexpect: at-least-once\n");
    let error = error_of(&topic_on_http);
    assert!(
        error.contains("`topic` is for `sink: kafka-topic`"),
        "{error}"
    );
}

#[test]
fn a_postgres_boundary_carries_its_database_and_a_missing_one_is_located() {
    let src = format!(
        "{HEAD}boundaries:\n  - name: rows\n    sink: postgres\n    id: json:/message_id\n    \
         postgres: {{ url: \"postgres://u:p@127.0.0.1:5432/d\", table: orders }}\n  \
         - name: email\n    sink: http\nexpect: at-least-once\n"
    );
    let plan = parse_plan(Path::new("p.yaml"), &src).unwrap();
    let [rows, email] = plan.boundaries() else {
        panic!("two boundaries");
    };
    assert_eq!(rows.sink, SinkKind::Postgres);
    assert_eq!(
        rows.postgres.as_ref().map(|p| p.table.as_str()),
        Some("orders")
    );
    assert!(email.postgres.is_none());

    let missing = format!(
        "{HEAD}boundaries:\n  - {{ name: rows, sink: postgres, id: json:/m }}\nexpect: at-least-once\n"
    );
    assert!(
        error_of(&missing).contains("boundaries[0]")
            && error_of(&missing).contains("needs `postgres:`"),
        "{}",
        error_of(&missing)
    );
    let stray = format!(
        "{HEAD}boundaries:\n  - {{ name: mail, sink: http, postgres: {{ url: \"postgres://h/d\", table: t }} }}\nexpect: at-least-once\n"
    );
    assert!(
        error_of(&stray).contains("boundaries[0].postgres"),
        "{}",
        error_of(&stray)
    );
}
