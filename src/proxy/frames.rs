//! Frames, not bytes: the [`Framing`] contract a protocol implements (how long the frame at the
//! start of a buffer is), and the [`FrameReader`] that yields whole frames from a socket.
//!
//! Invariants: a partial frame means "not yet" (`Ok(None)`), never an error; bytes that can never
//! start a valid frame are `Err`, which ends that one connection; a clean close between frames
//! differs from a close in the middle of one; no length prefix makes the reader allocate more
//! than [`MAX_FRAME`] (nor reserve more than 16 MiB before the bytes arrive).

use std::io;

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::AsyncReadExt;

/// Largest frame a proxy accepts; a longer one closes the connection (a hostile or corrupt
/// length prefix must not make the proxy allocate gigabytes).
pub const MAX_FRAME: usize = 100 * 1024 * 1024;

/// Cuts whole frames out of a byte stream. Pure: looks at bytes, never reads.
pub trait Framing: Send + Sync + 'static {
    /// The length in bytes of the first whole frame at the start of `buf`; `Ok(None)` when
    /// more bytes are needed; `Err(reason)` when these bytes can never start a valid frame.
    fn frame_len(&self, buf: &[u8]) -> Result<Option<usize>, String>;

    /// The whole length of the frame starting `buf` when its first bytes already tell it (a
    /// length prefix), before the frame is whole: the reader then makes room for all of it at
    /// once instead of growing (and copying) its buffer as a large frame arrives. Only a hint:
    /// [`Framing::frame_len`] still decides. Default: unknown.
    fn frame_len_hint(&self, buf: &[u8]) -> Option<usize> {
        let _ = buf;
        None
    }
}

/// The most room a reader makes at once from a [`Framing::frame_len_hint`]: a larger frame
/// grows the buffer as it arrives (a hostile prefix must not make the proxy allocate up to
/// [`MAX_FRAME`] before any byte of it came).
const MAX_RESERVE: usize = 16 * 1024 * 1024;

/// Why reading the next frame failed.
#[derive(Debug)]
pub enum ReadError {
    /// The peer closed the connection in the middle of a frame.
    ClosedMidFrame,
    /// The bytes cannot be a frame (bad length, too large...).
    Malformed(String),
    /// The socket failed.
    Io(io::Error),
}

/// Reads whole frames from one side of a connection.
pub struct FrameReader<R> {
    reader: R,
    buf: BytesMut,
}

impl<R: tokio::io::AsyncRead + Unpin> FrameReader<R> {
    /// A reader over `reader`.
    pub fn new(reader: R) -> FrameReader<R> {
        FrameReader {
            reader,
            buf: BytesMut::with_capacity(64 * 1024),
        }
    }

    /// The next whole frame; `Ok(None)` on a clean close (between frames).
    pub async fn read_frame<F: Framing + ?Sized>(
        &mut self,
        framing: &F,
    ) -> Result<Option<Bytes>, ReadError> {
        loop {
            if let Some(frame) = self.buffered_frame(framing)? {
                return Ok(Some(frame));
            }
            if !self.fill(framing).await? {
                return Ok(None);
            }
        }
    }

    /// The next whole frame if it is already buffered (no reading); `Ok(None)` when more
    /// bytes must be read first.
    pub fn buffered_frame<F: Framing + ?Sized>(
        &mut self,
        framing: &F,
    ) -> Result<Option<Bytes>, ReadError> {
        match framing.frame_len(&self.buf).map_err(ReadError::Malformed)? {
            Some(len) => Ok(Some(self.buf.split_to(len).freeze())),
            None => Ok(None),
        }
    }

    /// Reads what the socket has (waiting for at least one byte): `Ok(true)` when bytes came,
    /// `Ok(false)` on a clean close between frames.
    pub async fn fill<F: Framing + ?Sized>(&mut self, framing: &F) -> Result<bool, ReadError> {
        let spare = self.buf.capacity() - self.buf.len();
        let wanted = framing
            .frame_len_hint(&self.buf)
            .map_or(0, |total| total.saturating_sub(self.buf.len()))
            .min(MAX_RESERVE);
        if spare < wanted {
            self.buf.reserve(wanted);
        } else if spare < 16 * 1024 {
            self.buf.reserve(64 * 1024);
        }
        let n = self
            .reader
            .read_buf(&mut self.buf)
            .await
            .map_err(ReadError::Io)?;
        if n == 0 {
            return if self.buf.is_empty() {
                Ok(false)
            } else {
                Err(ReadError::ClosedMidFrame)
            };
        }
        Ok(true)
    }
}

/// Splits every frame found in `input` with `framing`, as a reader would: the frames, and
/// then `Ok(rest)` (a partial frame, possibly empty) or the error that stopped it. Used by
/// tests and the fuzzer to check the framing without sockets.
pub fn split_frames<F: Framing + ?Sized>(
    framing: &F,
    input: &[u8],
) -> (Vec<Bytes>, Result<usize, String>) {
    let mut buf = Bytes::copy_from_slice(input);
    let mut frames = Vec::new();
    loop {
        match framing.frame_len(&buf) {
            Ok(Some(len)) => {
                if len == 0 || len > buf.len() {
                    return (frames, Err(format!("framing returned a bad length {len}")));
                }
                frames.push(buf.split_to(len));
            }
            Ok(None) => return (frames, Ok(buf.remaining())),
            Err(e) => return (frames, Err(e)),
        }
    }
}
