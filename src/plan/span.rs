//! Positions of plan fields: a map from a path such as `faults[1].when.nth` to the line and
//! column where that key's value starts. serde reports positions for the errors it finds
//! itself; this map gives them to the rules checked afterwards.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the plan file; ordered as they are read (line, then column).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Position {
    /// Line, from 1.
    pub line: usize,
    /// Column, from 1.
    pub col: usize,
}

/// The line-break rules of a parser, which number lines differently: serde's (libyaml, YAML
/// 1.1) also breaks lines at NEL, LINE SEPARATOR and PARAGRAPH SEPARATOR; the span map's
/// (yaml-rust2, YAML 1.2) at `\r`, `\n` and `\r\n` only. Rust's `str::lines` is neither.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineBreaks {
    /// serde_yaml's parser: `\r`, `\n`, `\r\n`, U+0085, U+2028, U+2029.
    Serde,
    /// The span map's parser: `\r`, `\n`, `\r\n`.
    SpanMap,
}

impl LineBreaks {
    /// Line `line` (from 1) of `source` as this parser numbers lines, without its break.
    pub fn line(self, source: &str, line: usize) -> Option<&str> {
        let is_break = |c: char| match self {
            LineBreaks::Serde => matches!(c, '\n' | '\r' | '\u{85}' | '\u{2028}' | '\u{2029}'),
            LineBreaks::SpanMap => matches!(c, '\n' | '\r'),
        };
        let mut rest = source;
        for _ in 1..line {
            let at = rest.find(is_break)?;
            let after = &rest[at..];
            let skip = if after.starts_with("\r\n") {
                2
            } else {
                after.chars().next().map_or(0, char::len_utf8)
            };
            rest = &after[skip..];
        }
        Some(rest.find(is_break).map_or(rest, |end| &rest[..end]))
    }
}

/// Path → position of the value at that path.
#[derive(Debug, Default)]
pub struct SpanMap {
    positions: HashMap<String, Position>,
}

impl SpanMap {
    /// Builds the map; an unparsable document gives an empty map (serde reports that error).
    pub fn build(source: &str) -> SpanMap {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(source);
        let _ = parser.load(&mut walker, false);
        SpanMap {
            positions: walker.positions,
        }
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut path = path;
        loop {
            if let Some(p) = self.positions.get(path) {
                return Some(*p);
            }
            let cut = path.rfind(['.', '['])?;
            path = &path[..cut];
        }
    }
}

/// One open mapping or sequence while walking the events.
enum Frame {
    Mapping { path: String, key: Option<String> },
    Sequence { path: String, index: usize },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    positions: HashMap<String, Position>,
}

impl Walker {
    /// The path of the value that starts now, advancing the parent frame.
    fn next_value_path(&mut self) -> Option<String> {
        match self.stack.last_mut()? {
            Frame::Mapping { path, key } => {
                let key = key.take()?;
                Some(if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                })
            }
            Frame::Sequence { path, index } => {
                let p = format!("{path}[{index}]");
                *index += 1;
                Some(p)
            }
        }
    }

    /// True when the next scalar in the current mapping is a key.
    fn expecting_key(&self) -> bool {
        matches!(self.stack.last(), Some(Frame::Mapping { key: None, .. }))
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, event: Event, mark: Marker) {
        let pos = Position {
            line: mark.line(),
            col: mark.col() + 1,
        };
        match event {
            Event::Scalar(value, ..) => {
                if self.expecting_key() {
                    if let Some(Frame::Mapping { key, .. }) = self.stack.last_mut() {
                        *key = Some(value);
                    }
                } else if let Some(path) = self.next_value_path() {
                    self.positions.insert(path, pos);
                }
            }
            Event::MappingStart(..) => {
                let path = self.next_value_path().unwrap_or_default();
                self.positions.insert(path.clone(), pos);
                self.stack.push(Frame::Mapping { path, key: None });
            }
            Event::SequenceStart(..) => {
                let path = self.next_value_path().unwrap_or_default();
                self.positions.insert(path.clone(), pos);
                self.stack.push(Frame::Sequence { path, index: 0 });
            }
            // An alias stands for a whole value (or key): it takes its place in the walk, so
            // the keys after it keep their paths.
            Event::Alias(_) => {
                if self.expecting_key() {
                    if let Some(Frame::Mapping { key, .. }) = self.stack.last_mut() {
                        *key = Some("*".to_owned());
                    }
                } else if let Some(path) = self.next_value_path() {
                    self.positions.insert(path, pos);
                }
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_nested_keys_and_sequence_items() {
        let src = "name: x\nfaults:\n  - kill: consumer\n    when: { after: effect, nth: 0 }\n";
        let map = SpanMap::build(src);
        assert_eq!(map.find("name"), Some(Position { line: 1, col: 7 }));
        assert_eq!(map.find("faults[0].kill").map(|p| p.line), Some(3));
        assert_eq!(map.find("faults[0].when.nth").map(|p| p.line), Some(4));
        // An unknown path falls back to its nearest known ancestor.
        assert_eq!(map.find("faults[0].when.missing").map(|p| p.line), Some(4));
    }

    #[test]
    fn each_parser_numbers_lines_with_its_own_breaks() {
        // Found by tests/plan_fuzz.rs: a U+2028 in a comment moved serde's line numbers past
        // what `str::lines` counts, and the line shown under the message was another one.
        let src = "a: 1 # x\u{2028}y\nb: 2\rc: 3\r\nd: 4";
        assert_eq!(LineBreaks::Serde.line(src, 2), Some("y"));
        assert_eq!(LineBreaks::Serde.line(src, 5), Some("d: 4"));
        assert_eq!(LineBreaks::SpanMap.line(src, 1), Some("a: 1 # x\u{2028}y"));
        assert_eq!(LineBreaks::SpanMap.line(src, 3), Some("c: 3"));
        assert_eq!(LineBreaks::SpanMap.line(src, 4), Some("d: 4"));
        assert_eq!(LineBreaks::SpanMap.line(src, 5), None);
        assert_eq!(LineBreaks::Serde.line("a\n", 2), Some(""));
    }
}
