//! Sets keyed by message ID text, for the judge's lookups of the IDs that other events name
//! by text (acks, requeues): hashed with the timeline's fast [`IdHasher`] instead of SipHash.
//! The per-message columns name IDs by number and need no hashing.
//!
//! Invariant: only for keys from the run's own evidence (the harness's workload, a local
//! sink), where hash flooding is not a concern.

use std::collections::HashSet;
use std::hash::BuildHasherDefault;

use crate::timeline::IdHasher;

/// A set of message IDs, hashed with [`IdHasher`].
pub(crate) type IdSet<'a> = HashSet<&'a str, BuildHasherDefault<IdHasher>>;
