//! Who wrote each effect, against the real Kafka: the HTTP sink attributes every effect to the
//! consumer process that owns the connection's socket, so consumers posting to one shared URL
//! (which names no instance) are still attributed to the right instance and incarnation, and
//! a post from anything that is not a consumer process is `unknown`, with the reason.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use exactly::timeline::{read_events, AttributedBy, Event, ProcessPhase, Stamped};

/// A Kafka plan for the example consumer posting every effect to the shared URL.
fn plan(dir: &Path, name: &str, command: &str, instances: u32, faults: &str) -> PathBuf {
    let text = format!(
        "name: {name}
broker: {{ kind: kafka, bootstrap: 127.0.0.1:9092, topic: 'orders-{{run}}', partitions: 3, group: 'g-{{run}}' }}
workload: {{ messages: 400, payload: '{{\"order_id\":\"{{id}}\"}}' }}
consumer:
  command: {command}
  env: {{ EXACTLY_EFFECT_URL: '{{effect_url_shared}}' }}
  instances: {instances}
  restart: {{ after: 300ms }}
effects: {{ sink: http, id: json:/order_id }}
{faults}
expect: at-least-once
limits: {{ settle: 1s, deadline: 60s }}
"
    );
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, text).unwrap();
    path
}

fn consumer() -> String {
    examples_dir().join("kafka_consumer").display().to_string()
}

#[test]
fn effects_posted_to_the_shared_url_are_attributed_by_socket_to_the_incarnation_that_made_them() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    // consumer[1] is killed right after an effect is recorded: that effect must still be
    // proven (the lookup happens before the event that fires the kill), and its second
    // incarnation must be told apart from the first.
    let p = plan(
        dir.path(),
        "socket-attribution",
        &format!(
            "[{}, --mode, commit-after-effect, --work-ms, \"20\", --session-timeout-ms, \"2000\"]",
            consumer()
        ),
        2,
        "faults:\n  - kill: consumer[1]\n    when: { after: effect, nth: 20 }",
    );
    let (out, report) = run_plan(&p, &dir.path().join("run"), &[]);
    let why = explain(&out, &report);
    assert_eq!(report["counts"]["lost"], 0, "{why}");
    let events = read_events(&dir.path().join("run/events.jsonl")).unwrap();

    // (instance, incarnation) → (pid, started at, exited at) from the process events.
    let mut lives: HashMap<(u32, u32), (u32, u64, u64)> = HashMap::new();
    for e in &events {
        if let Event::Process {
            instance,
            incarnation,
            pid,
            phase,
            ..
        } = &e.event
        {
            let life = lives
                .entry((*instance, *incarnation))
                .or_insert((*pid, e.t_us, u64::MAX));
            if *phase == ProcessPhase::Exited {
                life.2 = e.t_us;
            }
        }
    }
    let effects: Vec<&Stamped> = events
        .iter()
        .filter(|e| matches!(e.event, Event::Effect { .. }))
        .collect();
    assert!(effects.len() >= 400, "{why}");
    let mut by_incarnation: HashMap<(u32, u32), usize> = HashMap::new();
    for e in &effects {
        let Event::Effect {
            id,
            instance,
            incarnation,
            attribution,
            ..
        } = &e.event
        else {
            unreachable!()
        };
        assert_eq!(
            attribution.by,
            Some(AttributedBy::Socket),
            "effect {id} at {}µs: {attribution:?}",
            e.t_us
        );
        let key = (
            instance.expect("socket gives the instance"),
            incarnation.unwrap(),
        );
        let (pid, started, exited) = lives[&key];
        assert_eq!(attribution.pid, Some(pid), "effect {id} by {key:?}");
        assert!(
            started < e.t_us && e.t_us < exited,
            "effect {id} of {key:?} at {}µs, outside its life {started}..{exited}",
            e.t_us
        );
        *by_incarnation.entry(key).or_default() += 1;
    }
    for key in [(0, 1), (1, 1), (1, 2)] {
        assert!(
            by_incarnation.get(&key).copied().unwrap_or(0) > 0,
            "no effect attributed to {key:?}: {by_incarnation:?}\n{why}"
        );
    }
    assert_eq!(by_incarnation[&(1, 1)], 20, "the kill came on the 20th");
    // The shared URL makes no claim, so nothing disagreed.
    assert!(!events.iter().any(
        |e| matches!(&e.event, Event::Warning { message } if message.contains("effect attribution"))
    ));
}

#[test]
fn a_post_from_a_process_that_is_not_a_consumer_is_unknown_and_says_which_process_it_was() {
    require_kafka();
    let dir = tempfile::tempdir().unwrap();
    let url_file = dir.path().join("shared-url");
    // The consumer tells the test where the shared URL is, then becomes the example consumer.
    let p = plan(
        dir.path(),
        "intruder",
        &format!(
            "[sh, -c, 'echo \"$EXACTLY_EFFECT_URL_SHARED\" > {}; exec {} --work-ms 20 --session-timeout-ms 2000']",
            url_file.display(),
            consumer()
        ),
        1,
        "",
    );
    let out_dir = dir.path().join("run");
    let mut run = Command::new(exactly_bin())
        .args([
            "run",
            p.to_str().unwrap(),
            "--out",
            out_dir.to_str().unwrap(),
        ])
        .current_dir(root())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("exactly runs");

    let deadline = Instant::now() + Duration::from_secs(30);
    let url = loop {
        let text = std::fs::read_to_string(&url_file).unwrap_or_default();
        if text.ends_with('\n') {
            break text.trim().to_owned();
        }
        if Instant::now() > deadline || run.try_wait().unwrap().is_some() {
            let _ = run.kill();
            panic!("the consumer never wrote the shared URL");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let answer = post(&url, r#"{"order_id":"intruder-1"}"#);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");

    let deadline = Instant::now() + Duration::from_secs(60);
    while run.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = run.kill();
            panic!("the run did not end within 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let events = read_events(&out_dir.join("events.jsonl")).unwrap();
    let intruder = events
        .iter()
        .find_map(|e| match &e.event {
            Event::Effect {
                id,
                instance,
                incarnation,
                attribution,
                ..
            } if id == "intruder-1" => Some((*instance, *incarnation, attribution.clone())),
            _ => None,
        })
        .expect("the intruder's effect is recorded");
    assert_eq!((intruder.0, intruder.1), (None, None));
    assert_eq!(intruder.2.by, Some(AttributedBy::Unknown));
    let note = intruder.2.note.unwrap_or_default();
    assert!(
        note.contains(&format!("pid {}", std::process::id()))
            && note.contains("no live consumer process group"),
        "the reason names this test process: {note}"
    );
    // The consumer's own effects on the same URL are still proven.
    assert!(events.iter().any(|e| matches!(
        &e.event,
        Event::Effect { instance: Some(0), incarnation: Some(1), attribution, .. }
            if attribution.by == Some(AttributedBy::Socket)
    )));
}

/// POSTs `body` to `url` (`http://HOST:PORT/PATH`) on a fresh connection; returns the answer.
fn post(url: &str, body: &str) -> String {
    let rest = url.strip_prefix("http://").expect("an http URL");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut conn = std::net::TcpStream::connect(host).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    write!(
        conn,
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut answer = String::new();
    let _ = conn.read_to_string(&mut answer);
    answer
}
