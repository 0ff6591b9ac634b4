//! The message IDs of a timeline read back, each stored once and numbered: the per-message
//! columns of [`super::Evidence`] name an ID by its [`MessageNo`] (4 bytes) instead of
//! carrying its text, and the judge keeps its per-ID state in arrays indexed by it instead of
//! hash maps keyed by text. On ten million messages the text of every ID held three times
//! (produce, effect, delivery) and the maps of it were most of the judge's memory and time.
//!
//! Invariants: numbers are dense, from 0, in the order IDs were first added (file order when
//! read back, so a judgement never depends on hashing); an ID's text never changes once added.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher};

use hashbrown::HashTable;

/// A message ID's number among the IDs of one [`MessageIds`] (its place in first-seen order).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageNo(u32);

impl MessageNo {
    /// Its place, from 0: the index of the ID's slot in arrays sized by [`MessageIds::len`].
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

/// Every message ID of a timeline, its text stored once in one buffer, numbered in the order
/// added.
#[derive(Debug, Default, Clone)]
pub struct MessageIds {
    /// The texts, one after another.
    text: String,
    /// Where each ID's text ends in `text`, by number (each starts where the previous ends).
    ends: Vec<usize>,
    /// The numbers, found by the hash of their text.
    table: HashTable<MessageNo>,
}

impl MessageIds {
    /// The number of `id`, added (numbered next) when it is new.
    ///
    /// # Panics
    /// Past `u32::MAX` IDs (four billion messages, far beyond any run a plan can describe).
    pub fn add(&mut self, id: &str) -> MessageNo {
        let hash = hash_of(id);
        let (text, ends) = (&self.text, &self.ends);
        let found = self
            .table
            .find(hash, |&no| slice(text, ends, no) == id)
            .copied();
        if let Some(no) = found {
            return no;
        }
        let no = MessageNo(u32::try_from(self.ends.len()).expect("fewer than 2^32 message IDs"));
        self.text.push_str(id);
        self.ends.push(self.text.len());
        let (text, ends) = (&self.text, &self.ends);
        self.table
            .insert_unique(hash, no, |&n| hash_of(slice(text, ends, n)));
        no
    }

    /// The number of `id`, if it was added.
    pub fn get(&self, id: &str) -> Option<MessageNo> {
        self.table
            .find(hash_of(id), |&no| self.text(no) == id)
            .copied()
    }

    /// The text of ID `no`.
    ///
    /// # Panics
    /// When `no` is not a number of these IDs (a bug: numbers come only from [`Self::add`]).
    pub fn text(&self, no: MessageNo) -> &str {
        slice(&self.text, &self.ends, no)
    }

    /// How many IDs.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Every ID's number, in order.
    pub fn numbers(&self) -> impl Iterator<Item = MessageNo> {
        (0..self.ends.len() as u32).map(MessageNo)
    }
}

/// The text of ID `no` in `text`.
fn slice<'a>(text: &'a str, ends: &[usize], no: MessageNo) -> &'a str {
    let i = no.index();
    let start = if i == 0 { 0 } else { ends[i - 1] };
    &text[start..ends[i]]
}

fn hash_of(id: &str) -> u64 {
    BuildHasherDefault::<IdHasher>::default().hash_one(id)
}

/// A fast non-cryptographic hasher for message IDs (the multiply-rotate scheme of rustc's
/// FxHasher). IDs come from the harness's own workload and from a local sink, so hash
/// flooding is not a concern, and SipHash would be most of the judge's time on large runs.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl IdHasher {
    const K: u64 = 0xf135_7aea_2e62_a9c5;

    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(26) ^ word).wrapping_mul(Self::K);
    }
}

impl Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.add(u64::from_le_bytes(w));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_numbered_once_in_the_order_first_added() {
        let mut ids = MessageIds::default();
        let a = ids.add("run-1");
        let b = ids.add("run-2");
        assert_eq!(ids.add("run-1"), a);
        let empty = ids.add("");
        assert_eq!((a.index(), b.index(), empty.index()), (0, 1, 2));
        assert_eq!(ids.len(), 3);
        assert_eq!(ids.text(b), "run-2");
        assert_eq!(ids.text(empty), "");
        assert_eq!(ids.get("run-2"), Some(b));
        assert_eq!(ids.get("run-3"), None);
        assert_eq!(ids.numbers().collect::<Vec<_>>(), [a, b, empty]);
    }

    #[test]
    fn many_ids_keep_their_numbers_as_the_table_grows() {
        let mut ids = MessageIds::default();
        let nos: Vec<MessageNo> = (0..10_000).map(|i| ids.add(&format!("id-{i}"))).collect();
        for (i, no) in nos.iter().enumerate() {
            assert_eq!(ids.get(&format!("id-{i}")), Some(*no));
            assert_eq!(ids.text(*no), format!("id-{i}"));
        }
    }
}
