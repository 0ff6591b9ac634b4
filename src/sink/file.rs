//! The file sink: each incarnation appends one line per effect to its own file
//! (`effects/consumer-I-N.log`, handed over as `EXACTLY_EFFECT_FILE`); the sink tails the folder
//! and records every complete line. Knowing the file gives exact attribution.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::EffectRecorder;
use crate::timeline::{AttributedBy, Attribution};

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

/// Per-file read position and the unfinished last line.
#[derive(Default)]
struct Tail {
    offset: u64,
    partial: Vec<u8>,
}

/// Tails `dir` until `stop`, then reads what is left once more.
pub async fn tail(dir: PathBuf, recorder: EffectRecorder, stop: CancellationToken) {
    let mut tails: HashMap<PathBuf, Tail> = HashMap::new();
    loop {
        let stopping = stop.is_cancelled();
        scan(&dir, &recorder, &mut tails);
        if stopping {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
            _ = stop.cancelled() => {}
        }
    }
}

fn scan(dir: &Path, recorder: &EffectRecorder, tails: &mut HashMap<PathBuf, Tail>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        let Some((instance, incarnation)) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(parse_name)
        else {
            continue;
        };
        let tail = tails.entry(path.clone()).or_default();
        let Ok(mut file) = std::fs::File::open(&path) else {
            continue;
        };
        if file.seek(SeekFrom::Start(tail.offset)).is_err() {
            continue;
        }
        let mut buf = Vec::new();
        let Ok(n) = file.read_to_end(&mut buf) else {
            continue;
        };
        tail.offset += n as u64;
        tail.partial.extend_from_slice(&buf);
        while let Some(pos) = tail.partial.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = tail.partial.drain(..=pos).collect();
            let line = &line[..line.len() - 1];
            match std::str::from_utf8(line) {
                Ok(text) if text.trim().is_empty() => {}
                Ok(text) => {
                    recorder.record(
                        &[],
                        text,
                        Some(instance),
                        Some(incarnation),
                        Attribution::by(AttributedBy::File),
                    );
                }
                Err(_) => recorder.reject("effect line is not UTF-8".into(), line),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effect_file_names_carry_instance_and_incarnation() {
        let p = effect_file(Path::new("/x"), 2, 7);
        assert_eq!(
            parse_name(p.file_name().unwrap().to_str().unwrap()),
            Some((2, 7))
        );
        assert_eq!(parse_name("other.log"), None);
    }
}
