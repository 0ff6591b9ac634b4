//! Reading `events.jsonl` back, fast enough for runs of millions of messages: the file is read
//! in blocks of whole lines by a thread of its own, the blocks of a batch parsed on every core
//! (each line by the fast path for the hot kinds, `fast`, else by serde), and the events kept in
//! file order. Memory is the events plus two batches of blocks: no copy of the whole file is
//! held.
//!
//! Invariants: the events come out in file order; blank lines are skipped; a bad last line
//! (torn: the harness was killed mid-write) is ignored; any other bad line is an error naming
//! its line number, from 1 (the first bad line in file order).

use std::fs::File;
use std::io::Read;
use std::path::Path;

use super::fast::{self, HotLine};
use super::{ReadEventsError, Stamped};

/// Bytes read into one block before it is cut after its last newline.
const BLOCK: usize = 4 << 20;

/// Blocks parsed at once: one per core, at most this many.
const MAX_WORKERS: usize = 4;

/// A run of whole lines of the file.
struct Block {
    text: Vec<u8>,
    /// True for the block that ends the file (its last line may be torn).
    last: bool,
}

/// Where the lines of a block go as they are parsed, on the thread that parses them.
pub(super) trait Lines {
    /// A line of a hot kind, read in place.
    fn hot(&mut self, line: HotLine<'_>);
    /// Any other event.
    fn event(&mut self, st: Stamped);
    /// The block's last line was given.
    fn end(&mut self) {}
}

impl Lines for Vec<Stamped> {
    fn hot(&mut self, line: HotLine<'_>) {
        self.push(Stamped {
            seq: line.seq,
            t_us: line.t_us,
            event: line.event.into_event(),
        });
    }

    fn event(&mut self, st: Stamped) {
        self.push(st);
    }
}

/// Reads `path` (see the module doc): the lines of each block go into a fresh `make()` on the
/// thread that parsed them, and each block's goes to `add` in file order.
pub(super) fn read_blocks<T: Lines + Send>(
    path: &Path,
    make: impl Fn() -> T + Sync,
    add: impl FnMut(T) + Send,
) -> Result<(), ReadEventsError> {
    read_in_blocks(path, BLOCK, make, add)
}

/// Reads `path` in blocks of about `block` bytes: a thread reads blocks ahead while batches
/// of them are parsed (and converted), and another gives what they make to `add` meanwhile.
fn read_in_blocks<T: Lines + Send>(
    path: &Path,
    block: usize,
    make: impl Fn() -> T + Sync,
    mut add: impl FnMut(T) + Send,
) -> Result<(), ReadEventsError> {
    let io = |source| ReadEventsError::Io {
        path: path.to_owned(),
        source,
    };
    let mut blocks = Blocks {
        file: File::open(path).map_err(io)?,
        block,
        carry: Vec::new(),
        ended: false,
    };
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_WORKERS);
    std::thread::scope(|s| {
        let (tx, rx) = std::sync::mpsc::sync_channel(workers);
        // Ends when the file does, or when the receiver is gone (a bad line ended the read).
        s.spawn(move || loop {
            let next = blocks.next().transpose();
            let end = !matches!(next, Some(Ok(_)));
            if next.is_some_and(|b| tx.send(b).is_err()) || end {
                return;
            }
        });
        // Ends when the parsing below does (its sender dropped).
        let (parsed, to_add) = std::sync::mpsc::sync_channel::<T>(workers);
        s.spawn(move || to_add.into_iter().for_each(&mut add));
        let mut lines_before = 0;
        loop {
            let batch = rx.iter().take(workers).collect::<Result<Vec<_>, _>>();
            let batch = batch.map_err(io)?;
            if batch.is_empty() {
                return Ok(());
            }
            let lines = parse_all(&batch, &make, &parsed).map_err(|(i, source)| {
                ReadEventsError::BadLine {
                    path: path.to_owned(),
                    line: lines_before + i + 1,
                    source,
                }
            })?;
            lines_before += lines;
        }
    })
}

/// Parses the blocks in parallel (one thread each, the first on this one), each into a fresh
/// `make()`, and sends them on in block order; returns how many lines they had, or the first
/// bad line (its index from the batch's first line).
fn parse_all<T: Lines + Send>(
    batch: &[Block],
    make: &(impl Fn() -> T + Sync),
    parsed_out: &std::sync::mpsc::SyncSender<T>,
) -> Result<usize, (usize, serde_json::Error)> {
    // The receiver goes only if its thread panicked, which the scope then passes on.
    let add = |made| {
        let _ = parsed_out.send(made);
    };
    let parse = |b: &Block| {
        let mut parsed = make();
        let lines = parse_block(b, &mut parsed)?;
        parsed.end();
        Ok((parsed, lines))
    };
    std::thread::scope(|s| {
        let others: Vec<_> = batch[1..]
            .iter()
            .map(|b| s.spawn(move || parse(b)))
            .collect();
        let (first, mut lines) = parse(&batch[0])?;
        add(first);
        for handle in others {
            // A parser thread panics only on a bug in the parser: pass the panic on.
            let parsed = handle
                .join()
                .unwrap_or_else(|p| std::panic::resume_unwind(p));
            let (parsed, n) = parsed.map_err(|(i, e)| (lines + i, e))?;
            add(parsed);
            lines += n;
        }
        Ok(lines)
    })
}

/// Gives the lines of one block to `out` and returns how many it had, or its first bad line
/// (index from 0, and why serde refused it); a bad last line of the file is ignored.
fn parse_block(block: &Block, out: &mut impl Lines) -> Result<usize, (usize, serde_json::Error)> {
    let text = block.text.as_slice();
    let mut start = 0;
    let mut index = 0;
    let ends = memchr::memchr_iter(b'\n', text).chain(
        // A last line with no newline (the end of the file).
        (!text.ends_with(b"\n") && !text.is_empty()).then_some(text.len()),
    );
    let mut ends = ends.peekable();
    while let Some(end) = ends.next() {
        let line = &text[start..end];
        start = end + 1;
        let is_last = block.last && ends.peek().is_none();
        if let Some(hot) = fast::parse_hot(line) {
            out.hot(hot);
            index += 1;
            continue;
        }
        match serde_json::from_slice(line) {
            Ok(e) => out.event(e),
            Err(_) if blank(line) => {}
            Err(_) if is_last => {}
            Err(e) => return Err((index, e)),
        }
        index += 1;
    }
    Ok(index)
}

/// A line with nothing but white space (skipped, as `str::trim` sees white space).
fn blank(line: &[u8]) -> bool {
    std::str::from_utf8(line).is_ok_and(|s| s.trim().is_empty())
}

/// The file cut into blocks of whole lines.
struct Blocks {
    file: File,
    /// Bytes read before a block is cut.
    block: usize,
    /// Bytes read past the last newline of the previous block: the start of the next one.
    carry: Vec<u8>,
    /// The block that ends the file has been given.
    ended: bool,
}

impl Blocks {
    /// The next block of whole lines (the last one may end without a newline).
    fn next(&mut self) -> std::io::Result<Option<Block>> {
        if self.ended {
            return Ok(None);
        }
        let mut text = Vec::with_capacity(self.carry.len() + self.block);
        text.append(&mut self.carry);
        let mut searched = 0;
        // At least a block's worth, and on until a newline past `searched` (a long line).
        loop {
            if self.fill(&mut text, searched + self.block)? {
                self.ended = true;
                return Ok((!text.is_empty()).then_some(Block { text, last: true }));
            }
            if let Some(i) = memchr::memrchr(b'\n', &text[searched..]) {
                self.carry = text.split_off(searched + i + 1);
                break;
            }
            searched = text.len();
        }
        if self.carry.is_empty() {
            // Nothing read past the cut: whether the file ends here decides `last`.
            self.fill_carry()?;
            self.ended = self.carry.is_empty();
        }
        Ok(Some(Block {
            text,
            last: self.ended,
        }))
    }

    /// Reads up to a block into the (empty) carry.
    fn fill_carry(&mut self) -> std::io::Result<()> {
        let mut more = Vec::with_capacity(self.block);
        self.fill(&mut more, self.block)?;
        self.carry = more;
        Ok(())
    }

    /// Reads into `buf` until it holds `len` bytes; true when the file ended first.
    fn fill(&mut self, buf: &mut Vec<u8>, len: usize) -> std::io::Result<bool> {
        let want = len.saturating_sub(buf.len());
        let got = (&mut self.file).take(want as u64).read_to_end(buf)?;
        Ok(got < want)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{BufRead, BufReader};

    use proptest::prelude::*;

    use super::*;
    use crate::timeline::{write_line, Event};

    /// The reference: every line read whole and parsed by serde, as `read_events` did before
    /// blocks and the fast path (the bad line's number, or the events).
    fn line_by_line(path: &Path) -> Result<Vec<Stamped>, usize> {
        let lines: Vec<String> = BufReader::new(File::open(path).unwrap())
            .lines()
            .collect::<Result<_, _>>()
            .unwrap();
        let mut events = Vec::new();
        for (i, line) in lines.iter().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            match serde_json::from_str(line) {
                Ok(e) => events.push(e),
                Err(_) if i + 1 == lines.len() => break,
                Err(_) => return Err(i + 1),
            }
        }
        Ok(events)
    }

    fn blocks_of(path: &Path, block: usize) -> Result<Vec<Stamped>, usize> {
        let mut events = Vec::new();
        read_in_blocks(path, block, Vec::new, |v| events.extend(v)).map_err(|e| match e {
            ReadEventsError::BadLine { line, .. } => line,
            ReadEventsError::Io { source, .. } => panic!("{source}"),
            ReadEventsError::Unresolved { source, .. } => panic!("{source}"),
        })?;
        Ok(events)
    }

    /// The file read in blocks into columns, as `read_recorded` reads it (IDs numbered on the
    /// parsing threads, a block at a time), and back to events.
    fn columns_of(path: &Path, block: usize) -> Result<Vec<Stamped>, usize> {
        let ids = crate::timeline::SharedIds::default();
        let mut columns = crate::timeline::Columns::default();
        let make = || crate::timeline::Columns::for_block(&ids);
        let read = read_in_blocks(path, block, make, |b| columns.append(b.columns));
        read.map_err(|e| match e {
            ReadEventsError::BadLine { line, .. } => line,
            other => panic!("{other}"),
        })?;
        Ok(columns.finish(ids.into_ids()).unwrap().to_events())
    }

    fn event(i: u64, kind: u8) -> Stamped {
        let id = format!("run-{i}");
        let event = match kind {
            0 => Event::Warning { message: id },
            1 => Event::Produced {
                id,
                seq: 1,
                key: None,
                partition: Some(0),
                offset: Some(i as i64),
                status: crate::timeline::ProduceStatus::Acked,
                error: None,
                poison: false,
            },
            _ => Event::DeliveredBatch {
                instance: 0,
                incarnation: 1,
                partition: 2,
                ranges: Vec::new(),
                records: (0..i % 7).map(|o| (o as i64, format!("r-{o}"))).collect(),
            },
        };
        Stamped {
            seq: i,
            t_us: i * 3,
            event,
        }
    }

    proptest! {
        /// Blocks of any size, long lines across them, blank lines, a torn or bad line
        /// anywhere: the same events, or the same bad line, as reading line by line.
        #[test]
        fn blocks_read_what_lines_read(
            kinds in proptest::collection::vec(0..3u8, 0..40),
            block in 1..300usize,
            blank_at in any::<prop::sample::Index>(),
            damage in prop_oneof![Just(None), any::<prop::sample::Index>().prop_map(Some)],
            newline_at_end in any::<bool>(),
        ) {
            let mut text = Vec::new();
            for (i, &k) in kinds.iter().enumerate() {
                write_line(&mut text, &event(i as u64, k));
            }
            let mut lines: Vec<Vec<u8>> = text.split(|&b| b == b'\n').map(<[u8]>::to_vec).collect();
            lines.pop();
            lines.insert(blank_at.index(lines.len() + 1), b"  ".to_vec());
            if let Some(at) = damage {
                let at = at.index(lines.len());
                let half = lines[at].len() / 2;
                lines[at].truncate(half);
            }
            let mut file = lines.join(&b'\n');
            if newline_at_end {
                file.push(b'\n');
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("events.jsonl");
            std::fs::write(&path, &file).unwrap();
            prop_assert_eq!(blocks_of(&path, block), line_by_line(&path));
            prop_assert_eq!(columns_of(&path, block), line_by_line(&path));
        }
    }

    #[test]
    fn an_empty_file_has_no_events_and_a_bad_line_is_named_across_blocks() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        std::fs::write(&path, b"").unwrap();
        assert_eq!(blocks_of(&path, 4), Ok(Vec::new()));
        let mut text = Vec::new();
        for i in 0..50 {
            write_line(&mut text, &event(i, 1));
        }
        text.extend_from_slice(b"not json\n");
        write_line(&mut text, &event(50, 0));
        std::fs::write(&path, &text).unwrap();
        assert_eq!(blocks_of(&path, 64), Err(51));
    }
}
