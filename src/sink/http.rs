//! The HTTP sink: a small server on 127.0.0.1 (random port) that plays the part of the outside
//! world the consumer changes (a mail API, a payment provider). Every POST is one effect. Each
//! incarnation is handed its own URL (`/effect/I/N`), so effects are attributed without touching
//! the consumer.
//!
//! With an `idempotency_key` rule the sink behaves like an idempotent provider: a repeated key
//! is answered again but recorded as `replayed`. For `during: effect` triggers the sink waits
//! for the nemesis's verdict before answering; a withheld effect is never answered.

use std::net::SocketAddr;

use axum::body::Bytes;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::IntoResponse;
use axum::Router;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use super::EffectRecorder;
use crate::nemesis::gate::{Gate, HoldPoint, Verdict};

/// A running HTTP sink.
pub struct HttpSink {
    /// Where it listens.
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl HttpSink {
    /// Binds 127.0.0.1 on a free port and serves until `stop`.
    pub async fn start(
        recorder: EffectRecorder,
        gate: Gate,
        stop: CancellationToken,
    ) -> std::io::Result<HttpSink> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let state = (recorder, gate, stop.clone());
        let app = Router::new().fallback(move |method, uri, headers, body| {
            let (recorder, gate, stop) = state.clone();
            handle(recorder, gate, stop, method, uri, headers, body)
        });
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
        });
        Ok(HttpSink { addr, task })
    }

    /// The URL one incarnation posts its effects to.
    pub fn url_for(&self, instance: u32, incarnation: u32) -> String {
        format!("http://{}/effect/{instance}/{incarnation}", self.addr)
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

async fn handle(
    recorder: EffectRecorder,
    gate: Gate,
    stop: CancellationToken,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> impl IntoResponse {
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
    let (instance, incarnation) = attribution(&uri);
    let Some(event) = recorder.record(&headers, text, instance, incarnation) else {
        return (
            StatusCode::BAD_REQUEST,
            "no message ID found in this effect\n",
        );
    };
    match gate.wait(HoldPoint::Effect, event.seq).await {
        Verdict::Answer => (StatusCode::OK, "ok\n"),
        Verdict::Withhold => {
            // A fault fired while this effect was in flight: never answer it.
            stop.cancelled().await;
            (StatusCode::SERVICE_UNAVAILABLE, "run ended\n")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::extract::Extractor;
    use crate::timeline::{EffectOutcome, Event, Timeline};
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
            "http",
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
        let uri: Uri = "/other".parse().unwrap();
        assert_eq!(attribution(&uri), (None, None));
    }
}
