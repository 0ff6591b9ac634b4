//! The file sink: each incarnation appends one line per effect to its own file
//! (`effects/consumer-I-N.log`, handed over as `EXACTLY_EFFECT_FILE`); the sink tails the folder
//! and records every complete line. Knowing the file gives exact attribution.
//!
//! Evidence is read every way it can arrive (issue 13): each file is followed through a handle
//! kept open, at a byte offset, with the last bytes read as a fingerprint.
//! - A file *replaced* under its name (rotated by rename: a new inode) is read to its end through
//!   the old handle, which stays followed (a writer that has not reopened yet still writes
//!   there), and the new file is read from its start; a warning says so.
//! - A file *truncated* (copy-truncate: it shrank, or its bytes before the offset changed) is
//!   read past the offset in its copy beside it (`NAME.1`, when that copy's bytes before the
//!   offset match), then from its new start; a warning says what was recovered or may be
//!   missing.
//!
//! Invariant: only a line that ended with its newline is an effect. What is left without one
//! when the run ends is a torn line (`torn_line`), never an effect.

use std::collections::{BTreeSet, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::EffectRecorder;
use crate::timeline::{AttributedBy, Attribution};

/// Bytes kept before the read offset to recognise the same content again.
const FINGERPRINT: usize = 64;

/// The effect file of one incarnation.
pub fn effect_file(dir: &Path, instance: u32, incarnation: u32) -> PathBuf {
    dir.join(format!("consumer-{instance}-{incarnation}.log"))
}

/// (instance, incarnation) from an effect file name.
fn parse_name(name: &str) -> Option<(u32, u32)> {
    let rest = name.strip_prefix("consumer-")?.strip_suffix(".log")?;
    let (i, n) = rest.split_once('-')?;
    Some((i.parse().ok()?, n.parse().ok()?))
}

/// The copy a copy-truncate rotation leaves beside `path` (`NAME.1`).
fn rotated_copy(path: &Path) -> PathBuf {
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(".1");
    path.with_file_name(name)
}

/// Where the complete lines of one incarnation's file go.
struct Lines<'a> {
    recorder: &'a EffectRecorder,
    instance: u32,
    incarnation: u32,
}

impl Lines<'_> {
    /// Records one complete line (its newline removed).
    fn line(&self, line: &[u8]) {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        // A writer that does not append leaves a hole of NULs after a copy-truncate.
        let start = line.iter().take_while(|b| **b == 0).count();
        let line = &line[start..];
        match std::str::from_utf8(line) {
            Ok(text) if text.trim().is_empty() => {}
            Ok(text) => {
                self.recorder.record(
                    &[],
                    text,
                    Some(self.instance),
                    Some(self.incarnation),
                    Attribution::by(AttributedBy::File),
                );
            }
            Err(_) => self
                .recorder
                .reject("effect line is not UTF-8".into(), line),
        }
    }
}

/// One effect file, followed through an open handle.
struct Source {
    file: File,
    /// (device, inode) of the file the handle reads.
    inode: (u64, u64),
    /// Bytes read so far.
    offset: u64,
    /// The unfinished last line.
    partial: Vec<u8>,
    /// The last bytes before `offset` (at most [`FINGERPRINT`]).
    recent: Vec<u8>,
}

impl Source {
    fn open(path: &Path) -> Option<Source> {
        let file = File::open(path).ok()?;
        let meta = file.metadata().ok()?;
        Some(Source {
            file,
            inode: (meta.dev(), meta.ino()),
            offset: 0,
            partial: Vec::new(),
            recent: Vec::new(),
        })
    }

    /// Reads what was appended since the last read and records its complete lines.
    fn read_new(&mut self, lines: &Lines<'_>) -> u64 {
        let mut buf = Vec::new();
        if self.file.seek(SeekFrom::Start(self.offset)).is_err() {
            return 0;
        }
        let Ok(n) = self.file.read_to_end(&mut buf) else {
            return 0;
        };
        self.take(&buf, lines);
        n as u64
    }

    /// Takes bytes that follow `offset`: complete lines are recorded, the rest waits.
    fn take(&mut self, bytes: &[u8], lines: &Lines<'_>) {
        self.offset += bytes.len() as u64;
        self.recent.extend_from_slice(bytes);
        let cut = self.recent.len().saturating_sub(FINGERPRINT);
        self.recent.drain(..cut);
        self.partial.extend_from_slice(bytes);
        let mut start = 0;
        while let Some(pos) = self.partial[start..].iter().position(|b| *b == b'\n') {
            lines.line(&self.partial[start..start + pos]);
            start += pos + 1;
        }
        self.partial.drain(..start);
    }

    /// True when `file` (of length `len`) holds these same bytes just before `offset`.
    fn fingerprint_matches(&self, file: &File, len: u64) -> bool {
        let n = self.recent.len() as u64;
        if len < self.offset {
            return false;
        }
        let mut seen = vec![0; self.recent.len()];
        file.read_exact_at(&mut seen, self.offset - n).is_ok() && seen == self.recent
    }

    /// The file under the same inode no longer holds what was read: it was truncated (and
    /// maybe written again past the offset between two reads).
    fn truncated(&self, len: u64) -> bool {
        len < self.offset || (len > self.offset && !self.fingerprint_matches(&self.file, len))
    }
}

/// What the sink follows under one file name.
#[derive(Default)]
struct Tail {
    /// The file now under the name.
    current: Option<Source>,
    /// Files rotated away from the name, still followed through their handles.
    retired: Vec<Source>,
}

/// Tails `dir` until `stop`, then reads what is left once more; a line still unfinished then
/// is recorded as torn.
pub async fn tail(dir: PathBuf, recorder: EffectRecorder, stop: CancellationToken) {
    let mut tails: HashMap<PathBuf, Tail> = HashMap::new();
    loop {
        let stopping = stop.is_cancelled();
        scan(&dir, &recorder, &mut tails);
        if stopping {
            finish(&recorder, tails);
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.cancelled() => {}
        }
    }
}

/// One read of every effect file in `dir`, and of every one followed before (a name that
/// disappeared, renamed away with nothing new under it yet, is still read through its handle).
fn scan(dir: &Path, recorder: &EffectRecorder, tails: &mut HashMap<PathBuf, Tail>) {
    let mut paths: BTreeSet<PathBuf> = tails.keys().cloned().collect();
    if let Ok(entries) = std::fs::read_dir(dir) {
        paths.extend(entries.filter_map(|e| e.ok().map(|e| e.path())));
    }
    for path in paths {
        let Some((instance, incarnation)) = lines_of(&path) else {
            continue;
        };
        let lines = Lines {
            recorder,
            instance,
            incarnation,
        };
        follow(&path, tails.entry(path.clone()).or_default(), &lines);
    }
}

/// (instance, incarnation) of an effect file's path.
fn lines_of(path: &Path) -> Option<(u32, u32)> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(parse_name)
}

/// One read of the file under `path`: rotated-away handles, then the file now there.
fn follow(path: &Path, tail: &mut Tail, lines: &Lines<'_>) {
    for old in &mut tail.retired {
        old.read_new(lines);
    }
    let Ok(meta) = std::fs::metadata(path) else {
        if let Some(current) = tail.current.as_mut() {
            current.read_new(lines);
        }
        return;
    };
    let Some(current) = tail.current.as_mut() else {
        tail.current = Source::open(path);
        if let Some(current) = tail.current.as_mut() {
            current.read_new(lines);
        }
        return;
    };
    if (meta.dev(), meta.ino()) != current.inode {
        let rest = current.read_new(lines);
        lines.recorder.warn(format!(
            "effect file {} was replaced under its name (rotated: a new file): the old one was read to its end through the handle kept open ({rest} more bytes) and is still followed; the new one is read from its start",
            path.display()
        ));
        tail.retired.extend(tail.current.take());
        tail.current = Source::open(path);
    } else if current.truncated(meta.len()) {
        recover_truncated(path, current, meta.len(), lines);
    }
    if let Some(current) = tail.current.as_mut() {
        current.read_new(lines);
    }
}

/// A copy-truncate: reads what followed the offset from the copy beside the file when that
/// copy holds the bytes read so far, then starts the file over from its new start.
fn recover_truncated(path: &Path, current: &mut Source, len: u64, lines: &Lines<'_>) {
    let copy_path = rotated_copy(path);
    let was = current.offset;
    let recovered = File::open(&copy_path).ok().and_then(|copy| {
        let copy_len = copy.metadata().ok()?.len();
        if !current.fingerprint_matches(&copy, copy_len) {
            return None;
        }
        let mut rest = Vec::new();
        read_from(&copy, was, &mut rest).ok()?;
        current.take(&rest, lines);
        Some(rest.len())
    });
    let message = match recovered {
        Some(n) => format!(
            "effect file {} was truncated (copy-truncate) after {was} bytes had been read: {n} more bytes were read from its copy {}; lines written between the copy and the truncation cannot be seen",
            path.display(),
            copy_path.display()
        ),
        None => format!(
            "effect file {} was truncated (now {len} bytes, {was} had been read) and no copy beside it ({}) holds what was read: lines written after byte {was} before the truncation may be missing",
            path.display(),
            copy_path.display()
        ),
    };
    lines.recorder.warn(message);
    current.offset = 0;
    current.recent.clear();
}

/// Reads `file` from byte `from` to its end into `out`, without moving its cursor.
fn read_from(file: &File, from: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    let mut at = from;
    let mut chunk = [0u8; 8192];
    loop {
        let n = file.read_at(&mut chunk, at)?;
        if n == 0 {
            return Ok(());
        }
        out.extend_from_slice(&chunk[..n]);
        at += n as u64;
    }
}

/// The run is over: every line still unfinished is torn.
fn finish(recorder: &EffectRecorder, tails: HashMap<PathBuf, Tail>) {
    let mut tails: Vec<(PathBuf, Tail)> = tails.into_iter().collect();
    tails.sort_by(|a, b| a.0.cmp(&b.0));
    for (path, tail) in tails {
        let Some((instance, incarnation)) = lines_of(&path) else {
            continue;
        };
        for source in tail.retired.iter().chain(tail.current.as_ref()) {
            if !source.partial.is_empty() {
                recorder.torn(instance, incarnation, &source.partial);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Extractor;
    use crate::timeline::{Event, SinkKind, Timeline};
    use std::io::Write;

    #[test]
    fn effect_file_names_carry_instance_and_incarnation() {
        let p = effect_file(Path::new("/x"), 2, 7);
        assert_eq!(
            parse_name(p.file_name().unwrap().to_str().unwrap()),
            Some((2, 7))
        );
        assert_eq!(parse_name("other.log"), None);
        assert_eq!(parse_name("consumer-0-1.log.1"), None, "a rotated copy");
    }

    /// A sink over a temp folder, scanned by hand; what it recorded, in order.
    struct Harness {
        dir: tempfile::TempDir,
        recorder: EffectRecorder,
        events: tokio::sync::mpsc::UnboundedReceiver<std::sync::Arc<crate::timeline::Stamped>>,
        tails: HashMap<PathBuf, Tail>,
    }

    /// What the sink recorded, in short: `effect r-1`, `torn r-`, `warn <text>`.
    impl Harness {
        fn new() -> Harness {
            let timeline = Timeline::in_memory();
            let events = timeline.subscribe();
            let rule = Extractor::parse("body").unwrap();
            Harness {
                dir: tempfile::tempdir().unwrap(),
                recorder: EffectRecorder::new(timeline, rule, None, SinkKind::File),
                events,
                tails: HashMap::new(),
            }
        }

        fn path(&self) -> PathBuf {
            effect_file(self.dir.path(), 0, 1)
        }

        fn append(&self, text: &str) {
            let mut f = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(self.path())
                .unwrap();
            f.write_all(text.as_bytes()).unwrap();
        }

        fn scan(&mut self) -> Vec<String> {
            scan(self.dir.path(), &self.recorder, &mut self.tails);
            self.seen()
        }

        fn finish(&mut self) -> Vec<String> {
            finish(&self.recorder, std::mem::take(&mut self.tails));
            self.seen()
        }

        fn seen(&mut self) -> Vec<String> {
            let mut out = Vec::new();
            while let Ok(e) = self.events.try_recv() {
                out.push(match &e.event {
                    Event::Effect { id, .. } => format!("effect {id}"),
                    Event::TornLine { sample, .. } => format!("torn {sample}"),
                    Event::Warning { message } => format!("warn {message}"),
                    other => format!("{other:?}"),
                });
            }
            out
        }
    }

    #[test]
    fn only_complete_lines_are_effects_and_the_last_unfinished_one_is_torn() {
        let mut h = Harness::new();
        h.append("r-1\nr-");
        assert_eq!(h.scan(), ["effect r-1"]);
        h.append("2\nr-1");
        assert_eq!(h.scan(), ["effect r-2"], "the line finished later is whole");
        // The writer died after `r-1` of `r-12`: another valid ID, never an effect.
        assert_eq!(h.finish(), ["torn r-1"]);
    }

    #[test]
    fn a_copy_truncated_file_is_read_on_from_its_copy_and_warned() {
        let mut h = Harness::new();
        h.append("r-1\nr-2\n");
        assert_eq!(h.scan(), ["effect r-1", "effect r-2"]);
        // More lines, then logrotate's copytruncate: copy to NAME.1, truncate, writer goes on.
        h.append("r-3\nr-");
        std::fs::copy(h.path(), rotated_copy(&h.path())).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(h.path())
            .unwrap()
            .set_len(0)
            .unwrap();
        h.append("4\nr-5\n");
        let seen = h.scan();
        assert_eq!(seen.len(), 4, "{seen:?}");
        assert_eq!(seen[0], "effect r-3", "read from the copy");
        assert!(
            seen[1].starts_with("warn ")
                && seen[1].contains("truncated")
                && seen[1].contains("6 more bytes were read from its copy"),
            "{seen:?}"
        );
        assert_eq!(
            seen[2..],
            ["effect r-4", "effect r-5"],
            "the line cut by the rotation is whole"
        );
        assert!(h.finish().is_empty());
    }

    #[test]
    fn a_file_truncated_and_rewritten_past_the_offset_between_two_reads_is_noticed() {
        let mut h = Harness::new();
        h.append("r-1\n");
        assert_eq!(h.scan(), ["effect r-1"]);
        std::fs::write(h.path(), "r-2\nr-3\n").unwrap();
        let seen = h.scan();
        assert!(seen[0].contains("no copy beside it"), "{seen:?}");
        assert_eq!(seen[1..], ["effect r-2", "effect r-3"], "none skipped");
    }

    #[test]
    fn a_file_rotated_by_rename_is_read_to_its_end_and_the_new_one_from_its_start() {
        let mut h = Harness::new();
        h.append("r-1\n");
        assert_eq!(h.scan(), ["effect r-1"]);
        // The writer still holds the old file while it is renamed away.
        let mut old = std::fs::OpenOptions::new()
            .append(true)
            .open(h.path())
            .unwrap();
        old.write_all(b"r-2\n").unwrap();
        std::fs::rename(h.path(), rotated_copy(&h.path())).unwrap();
        old.write_all(b"r-3\n").unwrap();
        assert_eq!(
            h.scan(),
            ["effect r-2", "effect r-3"],
            "name gone: the handle reads"
        );
        h.append("r-4\n");
        old.write_all(b"r-5\nr-").unwrap();
        let seen = h.scan();
        assert_eq!(seen[0], "effect r-5", "{seen:?}");
        assert!(
            seen[1].starts_with("warn ") && seen[1].contains("replaced under its name"),
            "{seen:?}"
        );
        assert_eq!(seen[2], "effect r-4");
        old.write_all(b"6\n").unwrap();
        assert_eq!(h.scan(), ["effect r-6"], "the old file is still followed");
        assert!(h.finish().is_empty());
    }
}
