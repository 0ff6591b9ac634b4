//! The HTTP sink: a small server on 127.0.0.1 (random port) that plays the part of the outside
//! world the consumer changes (a mail API, a payment provider). Every POST is one effect.
//!
//! Attribution has two witnesses. The socket: the connection's client socket is looked up in
//! `/proc` (see `owner`) and the consumer process holding it names the instance and
//! incarnation; that is proof, and it decides. The URL: each incarnation is handed its own URL
//! (`/effect/I/N`), a claim that stands in when the socket cannot be traced. `/effect` (the
//! shared URL) carries no claim, for consumers configured with one fixed address. When the
//! witnesses disagree, the socket wins and a warning says so once per pair. Lookups happen
//! before the effect is recorded: `after: effect` faults fire on that event, and the consumer is
//! alive (waiting for the answer) until then.
//!
//! With an `idempotency_key` rule the sink behaves like an idempotent provider: a repeated key
//! is answered again but recorded as `replayed`. For `during: effect` triggers the sink waits
//! for the nemesis's verdict before answering; a withheld effect is never answered.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::connect_info::{ConnectInfo, Connected};
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::serve::IncomingStream;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::owner::{LiveGroups, Owner, SocketOwners, Unknown};
use super::EffectRecorder;
use crate::gate::{Gate, HoldDecision, HoldPoint};
use crate::timeline::{AttributedBy, Attribution};

/// How long a socket-owner lookup may take before the effect is recorded without it.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(2);

/// A running HTTP sink.
pub struct HttpSink {
    /// Where it listens.
    pub addr: SocketAddr,
    owners: SocketOwners,
    task: tokio::task::JoinHandle<()>,
}

/// One accepted connection: the client's address and a number no other connection of this
/// process gets (so a reused client port is never mistaken for the old connection).
#[derive(Debug, Clone, Copy)]
struct Connection {
    peer: SocketAddr,
    number: u64,
}

impl Connected<IncomingStream<'_, TcpListener>> for Connection {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Connection {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        Connection {
            peer: *stream.remote_addr(),
            number: NEXT.fetch_add(1, Ordering::Relaxed),
        }
    }
}

/// (instance, incarnation) the socket showed, and the one the URL claimed.
type Disagreement = ((u32, u32), (u32, u32));

/// What every request handler shares.
struct Shared {
    recorder: EffectRecorder,
    gate: Gate,
    stop: CancellationToken,
    owners: SocketOwners,
    addr: SocketAddr,
    /// Disagreements already reported: (socket's pair, URL's pair).
    warned: Mutex<HashSet<Disagreement>>,
}

impl HttpSink {
    /// Binds 127.0.0.1 on a free port and serves until `stop`. Effects are attributed by URL
    /// only until `bind_consumers` says where the live consumer process groups come from.
    pub async fn start(
        recorder: EffectRecorder,
        gate: Gate,
        stop: CancellationToken,
    ) -> std::io::Result<HttpSink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let owners = SocketOwners::new();
        let shared = Arc::new(Shared {
            recorder,
            gate,
            stop: stop.clone(),
            owners: owners.clone(),
            addr,
            warned: Mutex::default(),
        });
        let app = Router::new().fallback(
            move |ConnectInfo(conn): ConnectInfo<Connection>, method, uri, headers, body| {
                handle(shared.clone(), conn, method, uri, headers, body)
            },
        );
        let task = tokio::spawn(async move {
            let _ = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<Connection>(),
            )
            .with_graceful_shutdown(async move { stop.cancelled().await })
            .await;
        });
        Ok(HttpSink { addr, owners, task })
    }

    /// Where the live consumer process groups come from (the supervisor, which starts after
    /// the sink). The first binding stays.
    pub fn bind_consumers(&self, live: LiveGroups) {
        self.owners.bind(live);
    }

    /// The URL one incarnation posts its effects to.
    pub fn url_for(&self, instance: u32, incarnation: u32) -> String {
        format!("http://{}/effect/{instance}/{incarnation}", self.addr)
    }

    /// The URL any consumer may post to: it carries no claim, so only the socket attributes.
    pub fn shared_url(&self) -> String {
        format!("http://{}/effect", self.addr)
    }

    /// Waits (bounded) for the server to finish after `stop`.
    pub async fn join(self) {
        let abort = self.task.abort_handle();
        if tokio::time::timeout(std::time::Duration::from_secs(2), self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}

/// (instance, incarnation) from `/effect/I/N`.
fn attribution(uri: &Uri) -> (Option<u32>, Option<u32>) {
    let mut parts = uri.path().trim_start_matches('/').split('/');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("effect"), Some(i), Some(n)) => (i.parse().ok(), n.parse().ok()),
        _ => (None, None),
    }
}

/// Who made an effect, from both witnesses.
#[derive(Debug, PartialEq)]
struct Decision {
    instance: Option<u32>,
    incarnation: Option<u32>,
    attribution: Attribution,
    /// The socket and the URL named different incarnations: (socket's, URL's).
    disagreement: Option<Disagreement>,
}

/// The socket decides when it found the owner; otherwise the URL's claim stands, with the
/// socket's reason kept; with neither, the effect is unknown and says why.
fn decide(socket: Result<Owner, Unknown>, url: (Option<u32>, Option<u32>)) -> Decision {
    match (socket, url) {
        (Ok(owner), url) => {
            let found = (owner.instance, owner.incarnation);
            let claimed = match url {
                (Some(i), Some(n)) if (i, n) != found => Some((i, n)),
                _ => None,
            };
            Decision {
                instance: Some(owner.instance),
                incarnation: Some(owner.incarnation),
                attribution: Attribution {
                    by: Some(AttributedBy::Socket),
                    pid: Some(owner.pid),
                    note: claimed.map(|(i, n)| {
                        format!("posted to the URL of consumer[{i}] incarnation {n}")
                    }),
                    row: None,
                    record: None,
                },
                disagreement: claimed.map(|c| (found, c)),
            }
        }
        (Err(unknown), (Some(i), Some(n))) => Decision {
            instance: Some(i),
            incarnation: Some(n),
            attribution: Attribution {
                by: Some(AttributedBy::Url),
                pid: None,
                note: Some(format!("socket: {}", unknown.reason)),
                row: None,
                record: None,
            },
            disagreement: None,
        },
        (Err(unknown), _) => Decision {
            instance: None,
            incarnation: None,
            attribution: Attribution {
                by: Some(AttributedBy::Unknown),
                pid: None,
                note: Some(unknown.reason),
                row: None,
                record: None,
            },
            disagreement: None,
        },
    }
}

impl Shared {
    /// The socket's owner, looked up off the runtime within `LOOKUP_DEADLINE`.
    async fn owner(&self, conn: Connection) -> Result<Owner, Unknown> {
        if let Some(owner) = self.owners.known(conn.peer, conn.number) {
            return Ok(owner);
        }
        let (owners, sink) = (self.owners.clone(), self.addr);
        let lookup =
            tokio::task::spawn_blocking(move || owners.owner(conn.peer, sink, conn.number));
        match tokio::time::timeout(LOOKUP_DEADLINE, lookup).await {
            Ok(Ok(found)) => found,
            Ok(Err(e)) => Err(Unknown {
                reason: format!("the socket lookup failed: {e}"),
            }),
            Err(_) => Err(Unknown {
                reason: format!("the socket lookup took longer than {LOOKUP_DEADLINE:?}"),
            }),
        }
    }

    /// Reports a socket/URL disagreement the first time this pair is seen.
    fn warn_once(&self, (found, claimed): Disagreement, pid: Option<u32>) {
        let fresh = self
            .warned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert((found, claimed));
        if fresh {
            let pid = pid.map(|p| format!(" (pid {p})")).unwrap_or_default();
            self.recorder.warn(format!(
                "effect attribution: consumer[{}] incarnation {}{pid} owns the socket of effects \
                 posted to the URL of consumer[{}] incarnation {}; they are attributed to the \
                 socket's owner (reported once for this pair)",
                found.0, found.1, claimed.0, claimed.1
            ));
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    conn: Connection,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
    let recorder = &shared.recorder;
    if method != Method::POST {
        recorder.reject(format!("{method} {uri}: effects are POSTed"), &body);
        return (
            StatusCode::METHOD_NOT_ALLOWED,
            "POST one effect per request\n",
        );
    }
    let Ok(text) = std::str::from_utf8(&body) else {
        recorder.reject("body is not UTF-8".into(), &body);
        return (StatusCode::BAD_REQUEST, "body is not UTF-8\n");
    };
    let headers: Vec<(String, String)> = headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    // Before the effect is recorded: a fault on this event may kill the process right after.
    let decision = decide(shared.owner(conn).await, attribution(&uri));
    if let Some(pair) = decision.disagreement {
        shared.warn_once(pair, decision.attribution.pid);
    }
    let Some(event) = recorder.record(
        &headers,
        text,
        decision.instance,
        decision.incarnation,
        decision.attribution,
    ) else {
        return (
            StatusCode::BAD_REQUEST,
            "no message ID found in this effect\n",
        );
    };
    match shared.gate.wait(HoldPoint::Effect, event.seq).await {
        HoldDecision::Answer => (StatusCode::OK, "ok\n"),
        HoldDecision::Withhold => {
            // A fault fired while this effect was in flight: never answer it.
            shared.stop.cancelled().await;
            (StatusCode::SERVICE_UNAVAILABLE, "run ended\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Extractor;
    use crate::timeline::{EffectOutcome, Event, SinkKind, Timeline};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// Sends raw bytes on a fresh connection and returns whatever comes back.
    async fn send_raw(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
        conn.write_all(bytes).await.unwrap();
        let mut out = Vec::new();
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(2),
            conn.read_to_end(&mut out),
        )
        .await;
        String::from_utf8_lossy(&out).into_owned()
    }

    fn post(body: &str, extra_header: &str) -> Vec<u8> {
        format!(
            "POST /effect/0/1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n{extra_header}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    #[tokio::test]
    async fn garbage_is_counted_and_the_sink_keeps_serving() {
        let timeline = Timeline::in_memory();
        let mut events = timeline.subscribe();
        let recorder = EffectRecorder::new(
            timeline.clone(),
            Extractor::parse("json:/order_id").unwrap(),
            Some(Extractor::parse("header:Idempotency-Key").unwrap()),
            SinkKind::Http,
        );
        let stop = CancellationToken::new();
        let sink = HttpSink::start(recorder, Gate::open(), stop.clone())
            .await
            .unwrap();

        send_raw(sink.addr, b"\x00\x01 not http at all\r\n\r\n").await;
        let answer = send_raw(sink.addr, &post("not json", "")).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{answer}");
        for _ in 0..2 {
            let answer = send_raw(
                sink.addr,
                &post(r#"{"order_id":"r-1"}"#, "Idempotency-Key: k1\r\n"),
            )
            .await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }

        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e.event.clone());
        }
        assert!(matches!(seen[0], Event::EffectRejected { .. }), "{seen:?}");
        let outcomes: Vec<_> = seen
            .iter()
            .filter_map(|e| match e {
                Event::Effect {
                    id,
                    instance: Some(0),
                    incarnation: Some(1),
                    outcome,
                    ..
                } if id == "r-1" => Some(*outcome),
                _ => None,
            })
            .collect();
        assert_eq!(outcomes, [EffectOutcome::Applied, EffectOutcome::Replayed]);
        stop.cancel();
        sink.join().await;
    }

    #[test]
    fn effect_urls_attribute_instance_and_incarnation() {
        let uri: Uri = "/effect/1/3".parse().unwrap();
        assert_eq!(attribution(&uri), (Some(1), Some(3)));
        let uri: Uri = "/effect".parse().unwrap();
        assert_eq!(
            attribution(&uri),
            (None, None),
            "the shared URL claims nothing"
        );
        let uri: Uri = "/other".parse().unwrap();
        assert_eq!(attribution(&uri), (None, None));
    }

    #[test]
    fn the_socket_decides_over_the_url_and_the_url_stands_in_when_it_cannot() {
        let owner = Owner {
            instance: 1,
            incarnation: 2,
            pid: 77,
        };
        let d = decide(Ok(owner), (Some(0), Some(1)));
        assert_eq!((d.instance, d.incarnation), (Some(1), Some(2)));
        assert_eq!(d.attribution.by, Some(AttributedBy::Socket));
        assert_eq!(d.attribution.pid, Some(77));
        assert_eq!(d.disagreement, Some(((1, 2), (0, 1))));
        let agree = decide(Ok(owner), (Some(1), Some(2)));
        assert_eq!((agree.disagreement, agree.attribution.note), (None, None));

        let lost = || Unknown {
            reason: "why".into(),
        };
        let d = decide(Err(lost()), (Some(0), Some(1)));
        assert_eq!((d.instance, d.incarnation), (Some(0), Some(1)));
        assert_eq!(d.attribution.by, Some(AttributedBy::Url));
        assert_eq!(d.attribution.note.as_deref(), Some("socket: why"));

        let d = decide(Err(lost()), (None, None));
        assert_eq!((d.instance, d.incarnation), (None, None));
        assert_eq!(d.attribution.by, Some(AttributedBy::Unknown));
        assert_eq!(d.attribution.note.as_deref(), Some("why"));
    }

    /// A sink whose only "consumer process group" is this test's own, as consumer[1]
    /// incarnation 2 (or none at all).
    async fn bound_sink(as_consumer: bool) -> (HttpSink, Timeline, CancellationToken) {
        let timeline = Timeline::in_memory();
        let recorder = EffectRecorder::new(
            timeline.clone(),
            Extractor::parse("json:/order_id").unwrap(),
            None,
            SinkKind::Http,
        );
        let stop = CancellationToken::new();
        let sink = HttpSink::start(recorder, Gate::open(), stop.clone())
            .await
            .unwrap();
        let pgid = nix::unistd::getpgrp().as_raw() as u32;
        sink.bind_consumers(Arc::new(move || {
            if as_consumer {
                vec![(1, 2, pgid).into()]
            } else {
                Vec::new()
            }
        }));
        (sink, timeline, stop)
    }

    fn post_to(path: &str, id: &str) -> Vec<u8> {
        let body = format!(r#"{{"order_id":"{id}"}}"#);
        format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_bytes()
    }

    fn drain(
        events: &mut tokio::sync::mpsc::UnboundedReceiver<Arc<crate::timeline::Stamped>>,
    ) -> Vec<Event> {
        let mut seen = Vec::new();
        while let Ok(e) = events.try_recv() {
            seen.push(e.event.clone());
        }
        seen
    }

    #[tokio::test]
    async fn the_socket_owner_wins_over_a_wrong_url_and_the_disagreement_is_warned_once() {
        let (sink, timeline, stop) = bound_sink(true).await;
        let mut events = timeline.subscribe();
        for id in ["a", "b"] {
            let answer = send_raw(sink.addr, &post_to("/effect/0/1", id)).await;
            assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        }
        let answer = send_raw(sink.addr, &post_to("/effect", "c")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let seen = drain(&mut events);
        let me = std::process::id();
        let effects: Vec<_> = seen
            .iter()
            .filter_map(|e| match e {
                Event::Effect {
                    instance,
                    incarnation,
                    attribution,
                    ..
                } => Some((*instance, *incarnation, attribution.by, attribution.pid)),
                _ => None,
            })
            .collect();
        assert_eq!(
            effects,
            vec![(Some(1), Some(2), Some(AttributedBy::Socket), Some(me)); 3],
            "{seen:?}"
        );
        let warnings = seen
            .iter()
            .filter(|e| matches!(e, Event::Warning { message } if message.contains("URL of consumer[0] incarnation 1")))
            .count();
        assert_eq!(warnings, 1, "{seen:?}");
        stop.cancel();
        sink.join().await;
    }

    /// Prints what attribution adds to an effect's round trip: the first request on a
    /// keep-alive connection (the `/proc` lookup) vs later ones (the cached owner).
    /// `cargo test --release --lib sink::http::tests::round_trip_latency -- --ignored --nocapture`
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[ignore = "a measurement, not a check"]
    async fn round_trip_latency() {
        let (sink, _timeline, stop) = bound_sink(true).await;
        let (mut first, mut later) = (Vec::new(), Vec::new());
        for round in 0..50 {
            let mut conn = tokio::net::TcpStream::connect(sink.addr).await.unwrap();
            for n in 0..20 {
                let body = format!(r#"{{"order_id":"m-{round}-{n}"}}"#);
                let request = format!(
                    "POST /effect HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n\r\n{body}",
                    body.len()
                );
                let t = std::time::Instant::now();
                conn.write_all(request.as_bytes()).await.unwrap();
                let mut buf = [0u8; 512];
                let got = conn.read(&mut buf).await.unwrap();
                assert!(buf[..got].starts_with(b"HTTP/1.1 200"));
                if n == 0 {
                    first.push(t.elapsed())
                } else {
                    later.push(t.elapsed())
                }
            }
        }
        first.sort();
        later.sort();
        let at = |v: &Vec<std::time::Duration>, q: usize| v[v.len() * q / 100];
        println!(
            "round trip median/p90: first on a connection {:?}/{:?}, later {:?}/{:?}",
            at(&first, 50),
            at(&first, 90),
            at(&later, 50),
            at(&later, 90)
        );
        stop.cancel();
        sink.join().await;
    }

    #[tokio::test]
    async fn a_post_from_outside_the_consumers_to_the_shared_url_is_unknown_with_the_reason() {
        let (sink, timeline, stop) = bound_sink(false).await;
        let mut events = timeline.subscribe();
        let answer = send_raw(sink.addr, &post_to("/effect", "x")).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        let seen = drain(&mut events);
        let Some(Event::Effect {
            instance: None,
            incarnation: None,
            attribution,
            ..
        }) = seen.iter().find(|e| matches!(e, Event::Effect { .. }))
        else {
            panic!("one unattributed effect: {seen:?}");
        };
        assert_eq!(attribution.by, Some(AttributedBy::Unknown));
        let note = attribution.note.as_deref().unwrap_or_default();
        assert!(
            note.contains(&format!("pid {}", std::process::id())),
            "{note}"
        );
        stop.cancel();
        sink.join().await;
    }
}
