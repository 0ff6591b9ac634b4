//! A consumer incarnation's output: its stdout and stderr are copied byte for byte into the run
//! folder's logs, stdout handed on line by line (the stdout sink), and the end of stderr kept
//! for the `stderr_tail` event (what a crashing consumer said).
//!
//! Invariant: only a line that ended with its newline is a [`Line::Complete`]. Bytes left
//! without a newline when the stream ends are a [`Line::Torn`]: the writer died mid-write
//! (SIGKILL into a block-buffered stdout) or stopped there, and a cut ID can read as another
//! valid ID, so the stdout sink never takes it for an effect. Bytes that are not UTF-8 are
//! read lossily rather than ending the copy (an ended copy would leave the pipe unread).

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWriteExt, BufReader};

/// Most bytes of stderr kept for its tail.
pub const STDERR_TAIL_BYTES: usize = 2048;
/// Most lines of stderr in its tail.
pub const STDERR_TAIL_LINES: usize = 20;

/// One piece of a consumer's output, as an observer receives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line<'a> {
    /// A line that ended with its newline (given without it, nor a `\r` before it).
    Complete(&'a str),
    /// The last bytes of the stream, which never got their newline.
    Torn(&'a [u8]),
}

/// The last bytes of a stream, bounded, readable while the copy still runs.
#[derive(Debug, Clone, Default)]
pub struct TailBuffer(Arc<Mutex<TailState>>);

#[derive(Debug, Default)]
struct TailState {
    kept: Vec<u8>,
    total: u64,
}

impl TailBuffer {
    fn push(&self, bytes: &[u8]) {
        let mut s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        s.total += bytes.len() as u64;
        s.kept.extend_from_slice(bytes);
        // Trimmed in steps, so the buffer is not shifted for every line.
        if s.kept.len() > 2 * STDERR_TAIL_BYTES {
            let cut = s.kept.len() - STDERR_TAIL_BYTES;
            s.kept.drain(..cut);
        }
    }

    /// (the tail as text, bytes written in all); `None` when nothing was written.
    pub fn tail(&self) -> Option<(String, u64)> {
        let s = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if s.total == 0 {
            return None;
        }
        let start = s.kept.len().saturating_sub(STDERR_TAIL_BYTES);
        let cut = s.total > (s.kept.len() - start) as u64;
        Some((tail_text(&s.kept[start..], cut), s.total))
    }
}

/// The last [`STDERR_TAIL_LINES`] lines of `bytes`, as text. When `cut` (the bytes are not the
/// stream's start), the first, partial line is left out if a whole one follows.
pub fn tail_text(bytes: &[u8], cut: bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut text = text.as_ref();
    if cut {
        if let Some(nl) = text.find('\n') {
            if nl + 1 < text.len() {
                text = &text[nl + 1..];
            }
        }
    }
    let text = text.trim_end_matches(['\n', '\r']);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(STDERR_TAIL_LINES);
    lines[from..].join("\n")
}

/// Copies `reader` to the file at `path` as it arrives, handing each line to `observe` and
/// every byte to `tail` (when given). Ends at the end of the stream.
pub async fn copy_output<R, F>(
    reader: R,
    path: PathBuf,
    observe: Option<F>,
    tail: Option<TailBuffer>,
) where
    R: AsyncRead + Unpin,
    F: Fn(Line<'_>),
{
    let mut file = tokio::fs::File::create(&path).await.ok();
    let mut reader = BufReader::new(reader);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(_) => {}
        }
        if let Some(f) = file.as_mut() {
            if f.write_all(&buf).await.is_err() {
                file = None;
            }
        }
        if let Some(t) = &tail {
            t.push(&buf);
        }
        let Some(observe) = &observe else {
            continue;
        };
        match buf.strip_suffix(b"\n") {
            Some(line) => {
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                observe(Line::Complete(&String::from_utf8_lossy(line)));
            }
            None => observe(Line::Torn(&buf)),
        }
    }
    if let Some(f) = file.as_mut() {
        let _ = f.flush().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `observe` saw of `input`, lines as text, torn ones marked.
    async fn seen(input: &[u8]) -> (Vec<String>, Vec<u8>) {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("out.log");
        let lines = Mutex::new(Vec::new());
        copy_output(
            input,
            log.clone(),
            Some(|l: Line<'_>| {
                lines.lock().unwrap().push(match l {
                    Line::Complete(s) => s.to_owned(),
                    Line::Torn(b) => format!("TORN:{}", String::from_utf8_lossy(b)),
                })
            }),
            None,
        )
        .await;
        (lines.into_inner().unwrap(), std::fs::read(log).unwrap())
    }

    #[tokio::test]
    async fn a_last_line_without_its_newline_is_torn_and_the_log_keeps_every_byte() {
        let input = b"effect r-1\r\neffect r-2\neffect r-1";
        let (lines, log) = seen(input).await;
        assert_eq!(lines, ["effect r-1", "effect r-2", "TORN:effect r-1"]);
        assert_eq!(log, input);
    }

    #[tokio::test]
    async fn bytes_that_are_not_utf8_do_not_end_the_copy() {
        let (lines, _) = seen(b"a\xff\nb\n").await;
        assert_eq!(lines, ["a\u{fffd}", "b"]);
    }

    #[tokio::test]
    async fn a_stream_that_ends_with_its_newline_has_no_torn_line() {
        let (lines, _) = seen(b"x\n").await;
        assert_eq!(lines, ["x"]);
        let (lines, _) = seen(b"").await;
        assert!(lines.is_empty());
    }

    #[tokio::test]
    async fn the_stderr_tail_keeps_the_last_lines_within_its_bounds() {
        let tail = TailBuffer::default();
        assert_eq!(tail.tail(), None, "nothing written: no tail");
        let mut input = Vec::new();
        for i in 0..500 {
            input.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        let dir = tempfile::tempdir().unwrap();
        copy_output(
            &input[..],
            dir.path().join("err.log"),
            None::<fn(Line<'_>)>,
            Some(tail.clone()),
        )
        .await;
        let (text, bytes) = tail.tail().unwrap();
        assert_eq!(bytes, input.len() as u64);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), STDERR_TAIL_LINES);
        assert_eq!(lines.last(), Some(&"line 499"));
        assert_eq!(lines[0], "line 480");
    }

    #[test]
    fn a_cut_tail_starts_at_a_whole_line() {
        assert_eq!(tail_text(b"ne 1\nline 2\n", true), "line 2");
        assert_eq!(tail_text(b"line 1\nline 2", false), "line 1\nline 2");
        assert_eq!(tail_text(b"only part", true), "only part");
        assert_eq!(tail_text(b"boom\n", false), "boom");
    }
}
