//! The message IDs of a timeline read back, each stored once and numbered: the per-message
//! columns of [`super::Recorded`] name an ID by its [`MessageNo`] (4 bytes) instead of
//! carrying its text, and the judge keeps its per-ID state in arrays indexed by it instead of
//! hash maps keyed by text. On ten million messages the text of every ID held three times
//! (produce, effect, delivery) and the maps of it were most of the judge's memory and time.
//!
//! The IDs are split by hash into [`SHARDS`] shards, each with its own texts and table, so the
//! threads that parse a large file number the IDs of their blocks at once ([`SharedIds`]: a
//! lock per shard), instead of one thread probing one table of millions that misses the cache
//! on every probe.
//!
//! Invariants: an ID has one number, and a number one ID, for the life of the IDs; numbers are
//! below [`MessageIds::bound`], dense within each shard. Which number an ID gets depends on
//! the order IDs were added (from several threads, on their timing), so nothing a judgement
//! says may depend on the numbers' order: they only index.

use std::hash::{BuildHasher, BuildHasherDefault, Hasher};
use std::sync::Mutex;

use hashbrown::HashTable;

/// Shards of the IDs (a power of two).
const SHARDS: usize = 64;
/// Bits of a number that name its shard.
const SHARD_BITS: u32 = SHARDS.trailing_zeros();
/// At least the length of an ID as the harness's workload writes them (`{run}-{seq}`, ~30
/// bytes; the judge bench's are 34), for sizing.
const USUAL_ID_BYTES: usize = 40;
/// Where in an ID's hash its shard is read: away from the low bits (a shard's table places an
/// ID by them) and the top seven (its control byte).
const SHARD_SHIFT: u32 = 40;

/// A message ID's number among the IDs of one [`MessageIds`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MessageNo(u32);

impl MessageNo {
    /// Its index in arrays sized by [`MessageIds::bound`].
    pub fn index(self) -> usize {
        self.0 as usize
    }

    fn new(shard: usize, local: usize) -> MessageNo {
        let no = (local << SHARD_BITS) | shard;
        MessageNo(u32::try_from(no).expect("fewer than 2^32 message IDs"))
    }

    fn shard(self) -> usize {
        self.0 as usize & (SHARDS - 1)
    }

    fn local(self) -> usize {
        (self.0 >> SHARD_BITS) as usize
    }
}

/// The IDs of one shard: their texts one after another, and a table of their local numbers
/// found by the hash of their text.
#[derive(Debug, Default, Clone)]
struct Shard {
    text: String,
    /// Where each ID's text ends in `text`, by local number.
    ends: Vec<usize>,
    table: HashTable<u32>,
}

impl Shard {
    fn text(&self, local: usize) -> &str {
        text_at(&self.text, &self.ends, local)
    }

    fn find(&self, hash: u64, id: &str) -> Option<usize> {
        let found = self.table.find(hash, |&l| self.text(l as usize) == id);
        found.map(|&l| l as usize)
    }

    /// The local number of `id` (whose hash is `hash`), added when new.
    fn add(&mut self, hash: u64, id: &str) -> usize {
        if let Some(local) = self.find(hash, id) {
            return local;
        }
        let local = self.ends.len();
        self.text.push_str(id);
        self.ends.push(self.text.len());
        let Shard { text, ends, table } = self;
        // A shard holds fewer than 2^32 IDs: numbers fit u32 (`MessageNo::new`).
        let rehash = |&l: &u32| hash_of(text_at(text, ends, l as usize));
        table.insert_unique(hash, local as u32, rehash);
        local
    }
}

/// The text of the `i`th of the IDs stored one after another in `text`, each ending where
/// `ends` says (a function, not a method, so a shard's table can rehash by it while borrowed).
fn text_at<'a>(text: &'a str, ends: &[usize], i: usize) -> &'a str {
    let start = if i == 0 { 0 } else { ends[i - 1] };
    &text[start..ends[i]]
}

/// Every message ID of a timeline, its text stored once, numbered.
#[derive(Debug, Clone)]
pub struct MessageIds {
    shards: Vec<Shard>,
}

impl Default for MessageIds {
    fn default() -> MessageIds {
        MessageIds {
            shards: vec![Shard::default(); SHARDS],
        }
    }
}

impl MessageIds {
    /// The number of `id`, added when it is new.
    pub fn add(&mut self, id: &str) -> MessageNo {
        let hash = hash_of(id);
        let shard = shard_of(hash);
        MessageNo::new(shard, self.shards[shard].add(hash, id))
    }

    /// The number of `id`, if it was added.
    pub fn get(&self, id: &str) -> Option<MessageNo> {
        let hash = hash_of(id);
        let shard = shard_of(hash);
        let local = self.shards[shard].find(hash, id)?;
        Some(MessageNo::new(shard, local))
    }

    /// The text of ID `no`.
    ///
    /// # Panics
    /// When `no` is not a number of these IDs (a bug: numbers come only from [`Self::add`]).
    pub fn text(&self, no: MessageNo) -> &str {
        self.shards[no.shard()].text(no.local())
    }

    /// How many IDs.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.ends.len()).sum()
    }

    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every number is below this: the size of an array indexed by [`MessageNo::index`].
    pub fn bound(&self) -> usize {
        let most = self.shards.iter().map(|s| s.ends.len()).max().unwrap_or(0);
        most << SHARD_BITS
    }

    /// Every ID's number.
    pub fn numbers(&self) -> impl Iterator<Item = MessageNo> + '_ {
        self.shards
            .iter()
            .enumerate()
            .flat_map(|(s, shard)| (0..shard.ends.len()).map(move |l| MessageNo::new(s, l)))
    }
}

/// IDs numbered by several threads at once, a block of them at a time ([`SharedIds::add_all`],
/// a lock per shard); [`SharedIds::into_ids`] once they are done.
#[derive(Debug)]
pub struct SharedIds {
    shards: Vec<Mutex<Shard>>,
}

impl Default for SharedIds {
    fn default() -> SharedIds {
        SharedIds {
            shards: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }
}

impl SharedIds {
    /// Room for about `n` IDs without growing (each time a shard's table grows it hashes its
    /// IDs again, reading texts scattered through memory).
    pub fn with_capacity(n: usize) -> SharedIds {
        let each = n / SHARDS + 1;
        let shard = || Shard {
            // Texts grown by doubling leave each smaller copy behind in the allocator's free
            // memory (resident): room for IDs of a usual length up front, never touched
            // beyond what is used.
            text: String::with_capacity(each * USUAL_ID_BYTES),
            ends: Vec::with_capacity(each),
            table: HashTable::with_capacity(each),
        };
        SharedIds {
            shards: (0..SHARDS).map(|_| Mutex::new(shard())).collect(),
        }
    }

    /// The numbers of the IDs `pending` holds, in its order: grouped by shard, so each shard is
    /// locked once per call rather than once per ID, and its table probed in one burst.
    pub fn add_all(&self, pending: &PendingIds) -> Vec<MessageNo> {
        let mut by_shard: Vec<Vec<u32>> = vec![Vec::new(); SHARDS];
        for (i, &(hash, _)) in pending.ids.iter().enumerate() {
            // A block holds fewer than 2^32 IDs.
            by_shard[shard_of(hash)].push(i as u32);
        }
        let mut nos = vec![MessageNo(0); pending.ids.len()];
        for (shard, items) in by_shard.iter().enumerate().filter(|(_, v)| !v.is_empty()) {
            // A panic while a shard was held leaves it whole (`Shard::add` pushes the text,
            // then the end, then the number): its IDs stay readable.
            let mut s = self.shards[shard]
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner());
            for &i in items {
                let (hash, id) = pending.get(i as usize);
                nos[i as usize] = MessageNo::new(shard, s.add(hash, id));
            }
        }
        nos
    }

    /// The IDs, for reading.
    pub fn into_ids(self) -> MessageIds {
        let shards = self.shards.into_iter();
        MessageIds {
            shards: shards
                .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
                .collect(),
        }
    }
}

/// IDs waiting for their numbers ([`SharedIds::add_all`]): each gets a provisional number, its
/// place here, that the real one replaces.
#[derive(Debug, Default)]
pub struct PendingIds {
    text: String,
    /// Each ID's hash and where its text ends.
    ids: Vec<(u64, usize)>,
}

impl PendingIds {
    fn get(&self, i: usize) -> (u64, &str) {
        let start = if i == 0 { 0 } else { self.ids[i - 1].1 };
        let (hash, end) = self.ids[i];
        (hash, &self.text[start..end])
    }

    /// The real number of the ID whose provisional number is `provisional`, among `nos`
    /// (what [`SharedIds::add_all`] gave for these IDs).
    pub fn resolve(nos: &[MessageNo], provisional: MessageNo) -> MessageNo {
        nos[provisional.index()]
    }
}

impl Numbering for PendingIds {
    fn number(&mut self, id: &str) -> MessageNo {
        self.text.push_str(id);
        self.ids.push((hash_of(id), self.text.len()));
        // A provisional number: the ID's place here (a block holds fewer than 2^32).
        MessageNo((self.ids.len() - 1) as u32)
    }
}

/// Numbers IDs: [`MessageIds`] on one thread; [`PendingIds`] provisionally, for
/// [`SharedIds`] to number on several.
pub trait Numbering {
    /// The number of `id`, added when it is new.
    fn number(&mut self, id: &str) -> MessageNo;
}

impl Numbering for MessageIds {
    fn number(&mut self, id: &str) -> MessageNo {
        self.add(id)
    }
}

fn shard_of(hash: u64) -> usize {
    (hash >> SHARD_SHIFT) as usize & (SHARDS - 1)
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
    fn an_id_has_one_number_and_a_number_one_id() {
        let mut ids = MessageIds::default();
        let a = ids.add("run-1");
        let b = ids.add("run-2");
        let empty = ids.add("");
        assert_eq!(ids.add("run-1"), a);
        assert!(a != b && b != empty && a != empty);
        assert_eq!(ids.len(), 3);
        assert_eq!(
            (ids.text(a), ids.text(b), ids.text(empty)),
            ("run-1", "run-2", "")
        );
        assert_eq!(ids.get("run-2"), Some(b));
        assert_eq!(ids.get("run-3"), None);
        let mut all: Vec<MessageNo> = ids.numbers().collect();
        all.sort();
        let mut want = vec![a, b, empty];
        want.sort();
        assert_eq!(all, want);
        assert!(want.iter().all(|n| n.index() < ids.bound()));
    }

    #[test]
    fn many_ids_keep_their_numbers_and_numbers_stay_dense() {
        let mut ids = MessageIds::default();
        let nos: Vec<MessageNo> = (0..100_000).map(|i| ids.add(&format!("id-{i}"))).collect();
        for (i, no) in nos.iter().enumerate() {
            assert_eq!(ids.get(&format!("id-{i}")), Some(*no));
            assert_eq!(ids.text(*no), format!("id-{i}"));
        }
        // Arrays indexed by number waste little room: the shards are even.
        assert!(ids.bound() < 100_000 * 5 / 4, "bound {}", ids.bound());
    }

    #[test]
    fn ids_numbered_from_several_threads_get_one_number_each() {
        let shared = SharedIds::default();
        let per_thread: Vec<Vec<MessageNo>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|_| {
                    let shared = &shared;
                    s.spawn(move || {
                        let mut pending = PendingIds::default();
                        let provisional: Vec<MessageNo> = (0..10_000)
                            .map(|i| pending.number(&format!("m-{i}")))
                            .collect();
                        let nos = shared.add_all(&pending);
                        let real = |p| PendingIds::resolve(&nos, p);
                        provisional.into_iter().map(real).collect::<Vec<_>>()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(per_thread.iter().all(|nos| *nos == per_thread[0]));
        let ids = shared.into_ids();
        assert_eq!(ids.len(), 10_000);
        for (i, no) in per_thread[0].iter().enumerate() {
            assert_eq!(ids.text(*no), format!("m-{i}"));
        }
    }
}
