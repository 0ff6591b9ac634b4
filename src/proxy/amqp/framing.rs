//! AMQP 0-9-1 framing: the 8-byte protocol header at connection start, then frames of a 7-byte
//! header (type, channel, size), the payload and the frame-end octet 0xCE, capped by the
//! connection's negotiated `frame_max`; and the few ids the proxy reads from a method frame.
//!
//! Pure functions of bytes (the frame max aside, which `connection.tune-ok` sets once).
//! Invariant: bytes that cannot be framed (a wrong frame-end octet, a frame larger than the
//! frame max) are refused, which closes that one connection; a partial frame is "not yet".

use std::sync::atomic::{AtomicUsize, Ordering};

use crate::proxy::{Framing, MAX_FRAME};

/// The frame-end octet every AMQP frame carries after its payload.
pub(super) const FRAME_END: u8 = 0xCE;
/// Frame header (type, channel, size) + frame end.
pub(super) const FRAME_OVERHEAD: usize = 8;
/// The largest frame accepted before `connection.tune-ok` fixes `frame_max` (the handshake's
/// frames are a few kilobytes; the spec's floor is 4096).
const PRE_TUNE_FRAME_MAX: usize = 1024 * 1024;
/// The spec's smallest `frame_max`.
const FRAME_MIN_SIZE: usize = 4096;

// Class and method ids (AMQP 0-9-1).
pub(super) const CONNECTION: u16 = 10;
pub(super) const CONNECTION_START_OK: u16 = 11;
pub(super) const CONNECTION_TUNE_OK: u16 = 31;
pub(super) const CHANNEL: u16 = 20;
pub(super) const CHANNEL_OPEN: u16 = 10;
pub(super) const CHANNEL_CLOSE: u16 = 40;
pub(super) const CHANNEL_CLOSE_OK: u16 = 41;
pub(super) const BASIC: u16 = 60;
pub(super) const BASIC_QOS: u16 = 10;
pub(super) const BASIC_CONSUME: u16 = 20;
pub(super) const BASIC_CONSUME_OK: u16 = 21;
pub(super) const BASIC_PUBLISH: u16 = 40;
pub(super) const BASIC_RETURN: u16 = 50;
pub(super) const BASIC_DELIVER: u16 = 60;
pub(super) const BASIC_GET: u16 = 70;
pub(super) const BASIC_GET_OK: u16 = 71;
pub(super) const BASIC_GET_EMPTY: u16 = 72;
pub(super) const BASIC_ACK: u16 = 80;
pub(super) const BASIC_REJECT: u16 = 90;
pub(super) const BASIC_RECOVER_ASYNC: u16 = 100;
pub(super) const BASIC_RECOVER_OK: u16 = 111;
pub(super) const BASIC_NACK: u16 = 120;

/// AMQP 0-9-1 framing for one connection: the 8-byte protocol header ("AMQP" + 4 version
/// bytes), else a frame of 7 header bytes + payload + 0xCE, capped by the connection's
/// negotiated `frame_max` (1 MiB until `connection.tune-ok`).
pub struct AmqpFraming {
    max: AtomicUsize,
}

impl Default for AmqpFraming {
    fn default() -> Self {
        AmqpFraming {
            max: AtomicUsize::new(PRE_TUNE_FRAME_MAX),
        }
    }
}

impl AmqpFraming {
    /// Framing for a new connection (before `connection.tune-ok`).
    pub fn new() -> AmqpFraming {
        AmqpFraming::default()
    }

    /// Applies the `frame_max` the client agreed to in `connection.tune-ok` (0 = no limit,
    /// which the proxy caps at [`MAX_FRAME`]).
    pub fn set_frame_max(&self, frame_max: u32) {
        let cap = if frame_max == 0 {
            MAX_FRAME
        } else {
            (frame_max as usize).clamp(FRAME_MIN_SIZE, MAX_FRAME)
        };
        self.max.store(cap, Ordering::Relaxed);
    }

    /// The largest whole frame (header and frame end included) accepted now.
    pub fn frame_max(&self) -> usize {
        self.max.load(Ordering::Relaxed)
    }
}

impl Framing for AmqpFraming {
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, String> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        if first == b'A' {
            let n = buf.len().min(4);
            if buf[..n] != b"AMQP"[..n] {
                return Err("bytes starting with 'A' that are not an AMQP protocol header".into());
            }
            return Ok((buf.len() >= 8).then_some(8));
        }
        let Some(header) = buf.get(..7) else {
            return Ok(None);
        };
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        let total = size + FRAME_OVERHEAD;
        let max = self.frame_max();
        if total > max {
            return Err(format!(
                "frame of {total} bytes (type {first}) exceeds the frame max of {max} bytes"
            ));
        }
        if buf.len() < total {
            return Ok(None);
        }
        if buf[total - 1] != FRAME_END {
            return Err(format!(
                "frame (type {first}, {size} bytes) does not end with 0xCE: the stream is out \
                 of step"
            ));
        }
        Ok(Some(total))
    }

    fn frame_len_hint(&self, buf: &[u8]) -> Option<usize> {
        let header = buf.get(..7).filter(|_| buf[0] != b'A')?;
        let size = u32::from_be_bytes([header[3], header[4], header[5], header[6]]) as usize;
        Some((size + FRAME_OVERHEAD).min(self.frame_max()))
    }
}

/// Splits a whole frame into (type, channel, payload); None for the protocol header or bytes
/// too short to be a frame.
pub(super) fn frame_parts(frame: &[u8]) -> Option<(u8, u16, &[u8])> {
    if frame.len() < FRAME_OVERHEAD || frame[0] == b'A' {
        return None;
    }
    Some((
        frame[0],
        u16::from_be_bytes([frame[1], frame[2]]),
        &frame[7..frame.len() - 1],
    ))
}

/// (class id, method id) of a method frame's payload.
pub(super) fn method_ids(payload: &[u8]) -> Option<(u16, u16)> {
    let b = payload.get(..4)?;
    Some((
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    ))
}

/// A method's name as the spec writes it (`basic.ack`), for the methods the proxy reads.
pub(super) fn method_name(class: u16, method: u16) -> String {
    match (class, method) {
        (BASIC, BASIC_DELIVER) => "basic.deliver".into(),
        (BASIC, BASIC_GET_OK) => "basic.get-ok".into(),
        (BASIC, BASIC_ACK) => "basic.ack".into(),
        (BASIC, BASIC_NACK) => "basic.nack".into(),
        (BASIC, BASIC_REJECT) => "basic.reject".into(),
        (BASIC, BASIC_QOS) => "basic.qos".into(),
        (BASIC, BASIC_CONSUME) => "basic.consume".into(),
        (BASIC, BASIC_CONSUME_OK) => "basic.consume-ok".into(),
        (CONNECTION, CONNECTION_START_OK) => "connection.start-ok".into(),
        (CONNECTION, CONNECTION_TUNE_OK) => "connection.tune-ok".into(),
        _ => format!("method {class}.{method}"),
    }
}
