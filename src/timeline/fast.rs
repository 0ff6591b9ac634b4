//! The fast path for the event kinds that fill a large `events.jsonl` (`produced`, `effect`,
//! `delivered_batch`): a line written by the timeline's own writer is read field by field,
//! with no intermediate buffering (serde reads a `Stamped` through two layers of buffered
//! `Content`, flatten and the internal tag, allocating every string twice), its strings
//! borrowed from the line ([`HotLine`]): the reader puts them into columns without allocating
//! them.
//!
//! Invariant: [`parse_hot`] returns `Some` only for a line it reads in full, in the exact shape
//! the writer produces (field order, no whitespace, no escapes in strings, integers only), and
//! then it returns what serde would; anything else (another kind, an unknown or reordered
//! field, an escape, a number that does not fit) is `None`, and the caller reads the line with
//! serde, which gives the result or the error. A property test compares both on written and
//! on mangled lines.

use super::{
    AttributedBy, Attribution, DeliveredIds, EffectOutcome, Event, OffsetRange, ProduceStatus,
    RecordPlace, RowCommit, SinkKind,
};

/// A line of a hot kind, read in place: its strings are borrowed from the line (the reader
/// puts them into columns without allocating them), or from an event already in memory.
#[derive(Debug)]
pub(super) struct HotLine<'a> {
    pub(super) seq: u64,
    pub(super) t_us: u64,
    pub(super) event: Hot<'a>,
}

/// The fields of a hot event (see [`Event`] for each).
#[derive(Debug)]
pub(super) enum Hot<'a> {
    Produced {
        id: &'a str,
        key_seq: u64,
        key: Option<&'a str>,
        partition: Option<i32>,
        offset: Option<i64>,
        status: ProduceStatus,
        error: Option<&'a str>,
        poison: bool,
    },
    Effect {
        id: &'a str,
        instance: Option<u32>,
        incarnation: Option<u32>,
        outcome: EffectOutcome,
        sink: SinkKind,
        boundary: Option<&'a str>,
        by: Option<AttributedBy>,
        pid: Option<u32>,
        note: Option<&'a str>,
        /// Never from the fast path (a line with a row or record goes to serde).
        row: Option<Box<RowCommit>>,
        /// As `row`.
        record: Option<Box<RecordPlace>>,
    },
    Batch {
        instance: u32,
        incarnation: u32,
        partition: i32,
        ranges: Vec<OffsetRange>,
        records: Vec<(i64, &'a str)>,
    },
}

impl Hot<'_> {
    /// The event, owning its strings.
    pub(super) fn into_event(self) -> Event {
        let owned = |s: Option<&str>| s.map(str::to_owned);
        match self {
            Hot::Produced {
                id,
                key_seq,
                key,
                partition,
                offset,
                status,
                error,
                poison,
            } => Event::Produced {
                id: id.to_owned(),
                seq: key_seq,
                key: owned(key),
                partition,
                offset,
                status,
                error: owned(error),
                poison,
            },
            Hot::Effect {
                id,
                instance,
                incarnation,
                outcome,
                sink,
                boundary,
                by,
                pid,
                note,
                row,
                record,
            } => Event::Effect {
                id: id.to_owned(),
                instance,
                incarnation,
                outcome,
                sink,
                boundary: owned(boundary),
                attribution: Attribution {
                    by,
                    pid,
                    note: owned(note),
                    row,
                    record,
                },
            },
            Hot::Batch {
                instance,
                incarnation,
                partition,
                ranges,
                records,
            } => Event::DeliveredBatch {
                instance,
                incarnation,
                partition,
                ranges,
                records: records.into_iter().collect::<DeliveredIds>(),
            },
        }
    }
}

/// The line as an event, when it has the writer's exact shape for a hot kind.
#[cfg(test)]
pub(super) fn parse(line: &[u8]) -> Option<super::Stamped> {
    let hot = parse_hot(line)?;
    Some(super::Stamped {
        seq: hot.seq,
        t_us: hot.t_us,
        event: hot.event.into_event(),
    })
}

/// The line read in place, when it has the writer's exact shape for a hot kind.
pub(super) fn parse_hot(line: &[u8]) -> Option<HotLine<'_>> {
    let mut c = Cursor { s: line, at: 0 };
    c.lit(b"{\"seq\":")?;
    let seq = c.u64()?;
    c.lit(b",\"t_us\":")?;
    let t_us = c.u64()?;
    c.lit(b",\"kind\":")?;
    let event = match c.str()? {
        "produced" => produced(&mut c)?,
        "effect" => effect(&mut c)?,
        "delivered_batch" => delivered_batch(&mut c)?,
        _ => return None,
    };
    c.lit(b"}")?;
    c.done()?;
    Some(HotLine { seq, t_us, event })
}

/// `produced`'s fields, in the writer's order.
fn produced<'a>(c: &mut Cursor<'a>) -> Option<Hot<'a>> {
    c.lit(b",\"id\":")?;
    let id = c.str()?;
    c.lit(b",\"key_seq\":")?;
    let key_seq = c.u64()?;
    let key = c.optional_str(b",\"key\":")?;
    c.lit(b",\"partition\":")?;
    let partition = c.nullable(|c| c.i32())?;
    c.lit(b",\"offset\":")?;
    let offset = c.nullable(|c| c.i64())?;
    c.lit(b",\"status\":")?;
    let status = match c.str()? {
        "acked" => ProduceStatus::Acked,
        "failed" => ProduceStatus::Failed,
        "indeterminate" => ProduceStatus::Indeterminate,
        _ => return None,
    };
    let error = c.optional_str(b",\"error\":")?;
    let poison = c.skip(b",\"poison\":true");
    Some(Hot::Produced {
        id,
        key_seq,
        key,
        partition,
        offset,
        status,
        error,
        poison,
    })
}

/// `effect`'s fields, in the writer's order; an attribution with a row or a record (postgres
/// and output-topic sinks) is left to serde.
fn effect<'a>(c: &mut Cursor<'a>) -> Option<Hot<'a>> {
    c.lit(b",\"id\":")?;
    let id = c.str()?;
    c.lit(b",\"instance\":")?;
    let instance = c.nullable(|c| c.u32())?;
    c.lit(b",\"incarnation\":")?;
    let incarnation = c.nullable(|c| c.u32())?;
    c.lit(b",\"outcome\":")?;
    let outcome = match c.str()? {
        "applied" => EffectOutcome::Applied,
        "replayed" => EffectOutcome::Replayed,
        _ => return None,
    };
    c.lit(b",\"sink\":")?;
    let sink = SinkKind::named(c.str()?)?;
    let boundary = c.optional_str(b",\"boundary\":")?;
    let by = match c.skip(b",\"attributed_by\":") {
        true => Some(attributed_by(c.str()?)?),
        false => None,
    };
    let pid = match c.skip(b",\"pid\":") {
        true => Some(c.u32()?),
        false => None,
    };
    let note = c.optional_str(b",\"attribution_note\":")?;
    Some(Hot::Effect {
        id,
        instance,
        incarnation,
        outcome,
        sink,
        boundary,
        by,
        pid,
        note,
        row: None,
        record: None,
    })
}

fn attributed_by(name: &str) -> Option<AttributedBy> {
    Some(match name {
        "socket" => AttributedBy::Socket,
        "url" => AttributedBy::Url,
        "file" => AttributedBy::File,
        "stdout" => AttributedBy::Stdout,
        "producer" => AttributedBy::Producer,
        "unknown" => AttributedBy::Unknown,
        _ => return None,
    })
}

/// `delivered_batch`'s fields, its records' IDs borrowed.
fn delivered_batch<'a>(c: &mut Cursor<'a>) -> Option<Hot<'a>> {
    c.lit(b",\"instance\":")?;
    let instance = c.u32()?;
    c.lit(b",\"incarnation\":")?;
    let incarnation = c.u32()?;
    c.lit(b",\"partition\":")?;
    let partition = c.i32()?;
    let ranges = offset_ranges(c)?;
    c.lit(b",\"records\":[")?;
    let mut records = Vec::new();
    if !c.skip(b"]") {
        loop {
            c.lit(b"[")?;
            let offset = c.i64()?;
            c.lit(b",")?;
            records.push((offset, c.str()?));
            c.lit(b"]")?;
            if c.skip(b"]") {
                break;
            }
            c.lit(b",")?;
        }
    }
    Some(Hot::Batch {
        instance,
        incarnation,
        partition,
        ranges,
        records,
    })
}

/// `delivered_batch`'s optional `"ranges":[[first,last],...]` (absent when none).
fn offset_ranges(c: &mut Cursor) -> Option<Vec<OffsetRange>> {
    let mut ranges = Vec::new();
    if !c.skip(b",\"ranges\":[") {
        return Some(ranges);
    }
    loop {
        c.lit(b"[")?;
        let first = c.i64()?;
        c.lit(b",")?;
        let last = c.i64()?;
        c.lit(b"]")?;
        ranges.push(OffsetRange { first, last });
        if c.skip(b"]") {
            return Some(ranges);
        }
        c.lit(b",")?;
    }
}

/// A position in a line; every reader returns `None` when the bytes there are not what it
/// reads (the line then goes to serde).
struct Cursor<'a> {
    s: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    /// Exactly these bytes.
    fn lit(&mut self, bytes: &[u8]) -> Option<()> {
        self.skip(bytes).then_some(())
    }

    /// These bytes if they come next (consumed), else nothing consumed.
    fn skip(&mut self, bytes: &[u8]) -> bool {
        let here = self.s[self.at..].starts_with(bytes);
        if here {
            self.at += bytes.len();
        }
        here
    }

    /// The end of the line.
    fn done(&self) -> Option<()> {
        (self.at == self.s.len()).then_some(())
    }

    /// A string with no escape and no control character (serde rejects the latter; the former
    /// it reads itself).
    fn str(&mut self) -> Option<&'a str> {
        self.lit(b"\"")?;
        let rest = &self.s[self.at..];
        let len = rest
            .iter()
            .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
        if rest[len] != b'"' {
            return None;
        }
        self.at += len + 1;
        std::str::from_utf8(&rest[..len]).ok()
    }

    /// `key` and a string when `key` comes next; `Some(None)` when it does not.
    fn optional_str(&mut self, key: &[u8]) -> Option<Option<&'a str>> {
        match self.skip(key) {
            true => Some(Some(self.str()?)),
            false => Some(None),
        }
    }

    /// `null`, or what `read` reads.
    fn nullable<T>(&mut self, read: impl FnOnce(&mut Self) -> Option<T>) -> Option<Option<T>> {
        match self.skip(b"null") {
            true => Some(None),
            false => read(self).map(Some),
        }
    }

    /// A JSON integer's digits: no leading zero (JSON has none), no fraction or exponent.
    fn digits(&mut self) -> Option<u64> {
        let rest = &self.s[self.at..];
        let len = rest.iter().take_while(|b| b.is_ascii_digit()).count();
        if len == 0 || (len > 1 && rest[0] == b'0') {
            return None;
        }
        if matches!(rest.get(len), Some(b'.' | b'e' | b'E')) {
            return None;
        }
        let mut n: u64 = 0;
        for &d in &rest[..len] {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
        }
        self.at += len;
        Some(n)
    }

    fn u64(&mut self) -> Option<u64> {
        self.digits()
    }

    fn u32(&mut self) -> Option<u32> {
        u32::try_from(self.digits()?).ok()
    }

    fn i64(&mut self) -> Option<i64> {
        let negative = self.skip(b"-");
        let n = self.digits()?;
        match negative {
            true => 0i64.checked_sub_unsigned(n),
            false => i64::try_from(n).ok(),
        }
    }

    fn i32(&mut self) -> Option<i32> {
        i32::try_from(self.i64()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::timeline::{write_line, RecordPlace, Stamped};

    /// What serde reads from the line (the reference).
    fn by_serde(line: &[u8]) -> Option<Stamped> {
        serde_json::from_slice(line).ok()
    }

    fn written(e: &Stamped) -> Vec<u8> {
        let mut buf = Vec::new();
        write_line(&mut buf, e);
        assert_eq!(buf.pop(), Some(b'\n'));
        buf
    }

    fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            "[a-z0-9-]{0,12}",
            ".{0,8}",
            Just("a\"b\\c\u{1}é".to_owned())
        ]
    }

    fn hot_event() -> impl Strategy<Value = Event> {
        let produced = (
            text(),
            any::<u64>(),
            proptest::option::of(text()),
            proptest::option::of(any::<i32>()),
            proptest::option::of(any::<i64>()),
            0..3u8,
            proptest::option::of(text()),
            any::<bool>(),
        )
            .prop_map(|(id, seq, key, partition, offset, s, error, poison)| {
                let status = [
                    ProduceStatus::Acked,
                    ProduceStatus::Failed,
                    ProduceStatus::Indeterminate,
                ][usize::from(s)];
                Event::Produced {
                    id,
                    seq,
                    key,
                    partition,
                    offset,
                    status,
                    error,
                    poison,
                }
            });
        let effect = (
            text(),
            proptest::option::of(any::<u32>()),
            proptest::option::of(any::<u32>()),
            any::<bool>(),
            0..SinkKind::ALL.len(),
            proptest::option::of(text()),
            proptest::option::of(0..6usize),
            proptest::option::of(any::<u32>()),
            proptest::option::of(text()),
            any::<bool>(),
        )
            .prop_map(
                |(id, instance, incarnation, applied, sink, boundary, by, pid, note, record)| {
                    let by = by.map(|i| {
                        [
                            AttributedBy::Socket,
                            AttributedBy::Url,
                            AttributedBy::File,
                            AttributedBy::Stdout,
                            AttributedBy::Producer,
                            AttributedBy::Unknown,
                        ][i]
                    });
                    let record = record.then(|| {
                        Box::new(RecordPlace {
                            topic: "out".into(),
                            partition: 1,
                            offset: 2,
                        })
                    });
                    Event::Effect {
                        id,
                        instance,
                        incarnation,
                        outcome: match applied {
                            true => EffectOutcome::Applied,
                            false => EffectOutcome::Replayed,
                        },
                        sink: SinkKind::ALL[sink],
                        boundary,
                        attribution: Attribution {
                            by,
                            pid,
                            note,
                            row: None,
                            record,
                        },
                    }
                },
            );
        let batch = (
            any::<u32>(),
            any::<u32>(),
            any::<i32>(),
            proptest::collection::vec((any::<i64>(), any::<i64>()), 0..3),
            proptest::collection::vec((any::<i64>(), text()), 0..5),
        )
            .prop_map(|(instance, incarnation, partition, ranges, records)| {
                Event::DeliveredBatch {
                    instance,
                    incarnation,
                    partition,
                    ranges: ranges.into_iter().map(OffsetRange::from).collect(),
                    records: records.iter().map(|(o, id)| (*o, id.as_str())).collect(),
                }
            });
        prop_oneof![produced, effect, batch]
    }

    proptest! {
        #[test]
        fn written_hot_events_read_back_as_serde_reads_them(
            event in hot_event(),
            seq in any::<u64>(),
            t_us in any::<u64>(),
        ) {
            let e = Stamped { seq, t_us, event };
            let line = written(&e);
            let fast = parse(&line);
            if let Some(fast) = &fast {
                prop_assert_eq!(fast, &e);
            }
            prop_assert_eq!(by_serde(&line), Some(e.clone()));
            // Plain text (no escapes) and no row or record: the fast path must take it.
            let plain = !String::from_utf8_lossy(&line).contains('\\')
                && !matches!(&e.event, Event::Effect { attribution, .. } if attribution.record.is_some());
            prop_assert_eq!(fast.is_some(), plain, "{}", String::from_utf8_lossy(&line));
        }

        #[test]
        fn a_mangled_line_is_read_as_serde_reads_it_or_left_to_serde(
            event in hot_event(),
            cut in any::<prop::sample::Index>(),
            edit in 0..4u8,
            byte in prop::sample::select(b" 0-9\"\\]},:.enul".to_vec()),
        ) {
            let e = Stamped { seq: 1, t_us: 2, event };
            let mut line = written(&e);
            let at = cut.index(line.len());
            match edit {
                0 => line.truncate(at),
                1 => line.insert(at, byte),
                2 => line[at] = byte,
                _ => {
                    line.remove(at);
                }
            }
            if let Some(fast) = parse(&line) {
                prop_assert_eq!(Some(fast), by_serde(&line), "{}", String::from_utf8_lossy(&line));
            }
        }
    }

    #[test]
    fn other_kinds_and_extra_fields_are_left_to_serde() {
        let lines: [&[u8]; 4] = [
            br#"{"seq":0,"t_us":1,"kind":"warning","message":"m"}"#,
            br#"{"seq":0,"t_us":1,"kind":"produced","id":"a","key_seq":1,"partition":0,"offset":3,"status":"acked","extra":1}"#,
            br#"{"seq":0,"t_us":1,"kind":"delivered_batch","instance":0,"incarnation":1,"partition":0,"records":[],"range":[0,9]}"#,
            br#"{"seq":0, "t_us":1,"kind":"effect","id":"a","instance":0,"incarnation":1,"outcome":"applied","sink":"http"}"#,
        ];
        for line in lines {
            assert_eq!(parse(line), None, "{}", String::from_utf8_lossy(line));
        }
        let ok = br#"{"seq":0,"t_us":1,"kind":"delivered_batch","instance":0,"incarnation":1,"partition":-2,"records":[[-5,"x"],[6,""]]}"#;
        assert_eq!(parse(ok), by_serde(ok));
        assert!(parse(ok).is_some());
    }
}
