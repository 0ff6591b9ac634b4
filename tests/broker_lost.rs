//! The broker goes away mid-run: the run ends on it within the plan's connect timeout, with
//! exit 4 and the reason, and never hangs. The shared brokers are never stopped (other tests
//! use them): the run reaches RabbitMQ through a TCP forwarder the test starts, and the test
//! kills the forwarder (every connection closed, the port refusing new ones). Kafka is not
//! tested this way: its clients connect to the addresses the broker advertises, which a
//! forwarder in front of the bootstrap address does not cover.

mod common;

use std::io::ErrorKind;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::*;
use exactly::timeline::{read_events, EndReason, Event};

/// Forwards every connection on a loopback port to `upstream`, until killed.
struct Forwarder {
    port: u16,
    stop: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<TcpStream>>>,
    accept: JoinHandle<()>,
}

impl Forwarder {
    fn start(upstream: SocketAddr) -> Forwarder {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let conns = Arc::new(Mutex::new(Vec::new()));
        let (s, c) = (stop.clone(), conns.clone());
        let accept = std::thread::spawn(move || {
            while !s.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => forward(client, upstream, &c),
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => break,
                }
            }
            // The listener goes with the thread: the port refuses connections from now on.
        });
        Forwarder {
            port,
            stop,
            conns,
            accept,
        }
    }

    /// The broker goes away: no new connection, every open one closed.
    fn kill(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.accept.join().unwrap();
        for conn in self.conns.lock().unwrap().drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }
}

/// Pipes `client` and a new connection to `upstream` both ways, keeping both for `kill`.
fn forward(client: TcpStream, upstream: SocketAddr, conns: &Mutex<Vec<TcpStream>>) {
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(upstream) else {
        return;
    };
    let mut all = conns.lock().unwrap();
    for (from, to) in [(&client, &server), (&server, &client)] {
        let (Ok(mut r), Ok(mut w)) = (from.try_clone(), to.try_clone()) else {
            return;
        };
        std::thread::spawn(move || {
            let _ = std::io::copy(&mut r, &mut w);
            let _ = w.shutdown(Shutdown::Write);
        });
    }
    all.push(client);
    all.push(server);
}

#[test]
fn the_broker_going_away_mid_run_ends_it_with_exit_4_within_the_connect_timeout() {
    require_rabbitmq();
    let forwarder = Forwarder::start("127.0.0.1:5672".parse().unwrap());
    let dir = tempfile::tempdir().unwrap();
    let connect_timeout = Duration::from_secs(5);
    let plan = plan_copy("amqp-no-fault.yaml", dir.path(), |t| {
        t.replace(
            "127.0.0.1:5672/%2f",
            &format!("127.0.0.1:{}/%2f\n  connect_timeout: 5s", forwarder.port),
        )
        .replace("ack-after-effect]", "ack-after-effect, --work-ms, \"50\"]")
        .replace("messages: 100", "messages: 300")
    });
    let out = dir.path().join("run");
    let mut harness = std::process::Command::new(exactly_bin())
        .args([
            "run",
            plan.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ])
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Mid-run: once the consumer has made some effects.
    let events = out.join("events.jsonl");
    let until = Instant::now() + Duration::from_secs(60);
    while Instant::now() < until {
        let effects = read_events(&events)
            .map(|es| {
                es.iter()
                    .filter(|e| matches!(e.event, Event::Effect { .. }))
                    .count()
            })
            .unwrap_or(0);
        if effects >= 10 {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    forwarder.kill();
    let killed = Instant::now();
    let status = loop {
        if let Some(s) = harness.try_wait().unwrap() {
            break s;
        }
        if killed.elapsed() > Duration::from_secs(90) {
            let _ = harness.kill();
            panic!("the run hung after its broker went away");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = killed.elapsed();
    let output = harness.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let events = read_events(&events).unwrap();
    let warnings: Vec<&str> = events
        .iter()
        .filter_map(|e| match &e.event {
            Event::Warning { message } => Some(message.as_str()),
            _ => None,
        })
        .collect();
    let why =
        format!("exit {status:?} after {took:.1?}\nstderr: {stderr}\nwarnings: {warnings:#?}");
    assert_eq!(status.code(), Some(4), "an infrastructure error\n{why}");
    assert!(
        events.iter().any(|e| matches!(
            e.event,
            Event::RunEnded {
                reason: EndReason::InfrastructureError
            }
        )),
        "{why}"
    );
    assert!(
        stderr.contains("RabbitMQ") || stderr.contains("broker"),
        "the error names the broker\n{why}"
    );
    // The connect timeout to notice, and the stop (consumers' grace, the report) after it.
    assert!(
        took < connect_timeout + Duration::from_secs(10),
        "ended within the connect timeout\n{why}"
    );
    eprintln!("broker gone: {why}");
}
