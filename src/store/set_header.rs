//! What a set's record holds in place of its elements, which the store keeps one per row: the
//! set's causal context, how many elements it has, how many bytes they take in the set's
//! canonical encoding, and the XOR of their entry hashes. A change to a few elements updates all
//! of it in O(change), so the Merkle item hash of a set of any size costs the same to keep.
//!
//! Pure: computed by the core from a planned change ([`SetHeader::after`]), persisted as it is by
//! the store.

use super::record;
use crate::clock::Dot;
use crate::crdt::{CausalContext, OrSet, SetChange};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SetHeader {
    pub context: CausalContext,
    /// Live elements.
    pub count: u64,
    /// The bytes the elements' entries take in the set's canonical encoding.
    pub entry_bytes: u64,
    /// XOR of [`entry_hash`] over the live elements.
    pub entries_xor: [u8; 32],
}

/// An element's entry as the set's canonical encoding writes it: the element, then its dots.
pub fn encode_entry(element: &str, dots: &BTreeSet<Dot>) -> Vec<u8> {
    record::to_bytes(&(element, dots))
}

fn entry_hash(entry: &[u8]) -> [u8; 32] {
    *blake3::hash(entry).as_bytes()
}

fn xor(into: &mut [u8; 32], hash: &[u8; 32]) {
    for (a, b) in into.iter_mut().zip(hash) {
        *a ^= b;
    }
}

impl SetHeader {
    /// The header of a whole set in memory.
    pub fn of(set: &OrSet) -> SetHeader {
        let mut header = SetHeader {
            context: set.context().clone(),
            ..SetHeader::default()
        };
        for (element, dots) in set.entries() {
            header.include(&encode_entry(element, dots), true);
        }
        header
    }

    fn include(&mut self, entry: &[u8], present: bool) {
        xor(&mut self.entries_xor, &entry_hash(entry));
        let len = entry.len() as u64;
        if present {
            self.count += 1;
            self.entry_bytes += len;
        } else {
            self.count = self.count.saturating_sub(1);
            self.entry_bytes = self.entry_bytes.saturating_sub(len);
        }
    }

    /// The header once `change` (planned against the set this header describes) is applied.
    pub fn after(&self, change: &SetChange) -> SetHeader {
        let mut header = SetHeader {
            context: change.context.clone(),
            ..self.clone()
        };
        for (element, dots) in &change.elements {
            if !dots.before.is_empty() {
                header.include(&encode_entry(element, &dots.before), false);
            }
            if !dots.after.is_empty() {
                header.include(&encode_entry(element, &dots.after), true);
            }
        }
        header
    }

    /// The length of the whole set's canonical encoding (what a full-state exchange sends).
    pub fn encoded_len(&self) -> usize {
        let context = record::to_bytes(&self.context).len();
        let count = record::to_bytes(&self.count).len();
        context + count + self.entry_bytes as usize
    }
}
