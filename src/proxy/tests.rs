//! Tests of the shared proxy machinery: framing, the pump's gathered writes, the fault registry.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::*;
use crate::plan::Target;

struct Len1;
impl Framing for Len1 {
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        match buf.first() {
            None => Ok(None),
            Some(0) => Err("zero length".into()),
            Some(&n) if buf.len() > n as usize => Ok(Some(n as usize + 1)),
            Some(_) => Ok(None),
        }
    }
}

#[test]
fn frames_split_and_partial_frame_means_not_yet() {
    let (frames, rest) = split_frames(&Len1, &[1, 9, 2, 7, 7, 3, 1]);
    assert_eq!(frames.len(), 2);
    assert_eq!(rest, Ok(2));
    let (_, rest) = split_frames(&Len1, &[0]);
    assert!(rest.is_err());
}

#[tokio::test]
async fn faults_need_a_connection_and_describe_what_they_hit() {
    let registry = Registry::new(2, CancellationToken::new());
    assert_eq!(
        registry.partition(Target::Instance(0), Duration::from_secs(1)),
        None
    );
    let guard = registry.register(0);
    let _other = registry.register(1);
    assert_eq!(
        registry
            .partition(Target::Instance(0), Duration::from_secs(10))
            .as_deref(),
        Some("partitioned consumer[0]: 1 connection for 10s")
    );
    assert_eq!(
        registry.sever(Target::AllInstances).as_deref(),
        Some("severed consumer: 2 connections (RST)")
    );
    assert!(guard.view.sever.is_cancelled());
    drop(guard);
    assert_eq!(registry.connections(0), 0);
}

/// Holds frames starting with 0xFF until `release` fires; asks to hear when 0xEE frames
/// were written.
struct HoldFf {
    release: Option<tokio::sync::oneshot::Receiver<()>>,
    written: Arc<Mutex<Vec<u8>>>,
    last: u8,
}

impl FrameHandler for HoldFf {
    async fn on_frame(&mut self, frame: Bytes) -> Handled {
        if frame[1] == 0xff {
            if let Some(rx) = self.release.take() {
                let _ = rx.await;
            }
        }
        self.last = frame[1];
        Handled::Forward(frame)
    }

    fn needs_written(&self) -> bool {
        self.last == 0xee
    }

    fn on_written(&mut self) {
        self.written.lock().unwrap().push(self.last);
    }
}

/// Frames that arrive together go out together, but a held frame never keeps the frames
/// before it from being written, and a handler that asks hears that its frame was written.
#[tokio::test]
async fn gathered_writes_never_wait_behind_a_held_frame() {
    let listener = bind_loopback().unwrap();
    let addr = listener.local_addr().unwrap();
    let (mut sender, accepted) =
        tokio::join!(async { TcpStream::connect(addr).await.unwrap() }, async {
            listener.accept().await.unwrap().0
        });
    let listener = bind_loopback().unwrap();
    let addr = listener.local_addr().unwrap();
    let (out, mut receiver) =
        tokio::join!(async { TcpStream::connect(addr).await.unwrap() }, async {
            listener.accept().await.unwrap().0
        });
    let (from, _) = accepted.into_split();
    let (_, mut to) = out.into_split();
    let (release, rx) = tokio::sync::oneshot::channel();
    let written = Arc::new(Mutex::new(Vec::new()));
    let mut handler = HoldFf {
        release: Some(rx),
        written: written.clone(),
        last: 0,
    };
    let registry = Registry::new(1, CancellationToken::new());
    let guard = registry.register(0);
    let pump = tokio::spawn(async move {
        let mut from = FrameReader::new(from);
        pump(&mut from, &mut to, &Len1, &mut handler, &guard.view).await
    });
    // Four frames in one write: 1, ff (held), ee, 2.
    sender
        .write_all(&[1, 1, 1, 0xff, 1, 0xee, 1, 2])
        .await
        .unwrap();
    let mut got = [0u8; 2];
    tokio::time::timeout(Duration::from_secs(5), receiver.read_exact(&mut got))
        .await
        .expect("the frame before the held one is written while it waits")
        .unwrap();
    assert_eq!(got, [1, 1]);
    assert!(written.lock().unwrap().is_empty());
    release.send(()).unwrap();
    let mut got = [0u8; 6];
    tokio::time::timeout(Duration::from_secs(5), receiver.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, [1, 0xff, 1, 0xee, 1, 2]);
    drop(sender);
    assert!(matches!(pump.await.unwrap(), PumpEnd::Closed));
    assert_eq!(*written.lock().unwrap(), [0xee]);
}

#[tokio::test]
async fn a_partition_holds_frames_until_it_heals() {
    let registry = Registry::new(1, CancellationToken::new());
    let guard = registry.register(0);
    registry.partition(Target::Instance(0), Duration::from_millis(200));
    let start = Instant::now();
    guard.view.pass(start).await;
    assert!(start.elapsed() >= Duration::from_millis(200));
}

#[test]
fn a_protocol_reply_needs_a_live_connection_and_is_taken_once_by_the_request_it_answers() {
    use crate::plan::{CommitErrorForm, KafkaError, ProtocolReply};
    let registry = Registry::new(2, CancellationToken::new());
    let refuse = ProtocolReply::CommitError {
        error: KafkaError::RebalanceInProgress,
        form: CommitErrorForm::Dropped,
    };
    // No connection yet: not applied.
    assert_eq!(registry.arm_reply(Target::AllInstances, refuse), None);
    let _conn = registry.register(1);
    let detail = registry.arm_reply(Target::AllInstances, refuse).unwrap();
    assert!(detail.contains("1 instance"), "{detail}");
    assert!(
        detail.contains("REBALANCE_IN_PROGRESS (dropped)"),
        "{detail}"
    );
    let is_commit = |r: &ProtocolReply| matches!(r, ProtocolReply::CommitError { .. });
    let is_fetch = |r: &ProtocolReply| matches!(r, ProtocolReply::FetchTwice);
    // Instance 0 had no connection: nothing armed there; a Fetch does not take a commit's.
    assert_eq!(registry.take_reply(0, is_commit), None);
    assert_eq!(registry.take_reply(1, is_fetch), None);
    assert_eq!(registry.take_reply(1, is_commit), Some(refuse));
    assert_eq!(registry.take_reply(1, is_commit), None, "once");
}
