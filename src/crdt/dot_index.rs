//! The OR-set's derived index from dot to element: which elements hold each dot, sorted by actor
//! and counter, so that a merge finds the elements a delta's context covers without walking the
//! set. Never encoded: the set builds it as it decodes its entries.
//!
//! Actors are numbered within the index and element names up to 22 bytes are kept inline, so a
//! key holds no pointer: cloning or dropping the index copies or frees only the tree's own nodes,
//! and it touches none of the set's other allocations (a shared, reference-counted name would
//! make each clone and drop write to every element's name).

use super::context::{actor, counter, dot, Actor};
use crate::clock::Dot;
use std::collections::{BTreeMap, BTreeSet};

const INLINE: usize = 22;

/// An element name as the index keeps it. Names of up to [`INLINE`] bytes are always inline and
/// longer ones always boxed, so equal names have equal forms. The order is not the names' order:
/// it only breaks ties between elements that hold the same dot.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum IndexedName {
    Inline { len: u8, bytes: [u8; INLINE] },
    Boxed(Box<str>),
}

impl IndexedName {
    /// The least name in the index's order.
    const MIN: IndexedName = IndexedName::Inline {
        len: 0,
        bytes: [0; INLINE],
    };

    fn new(name: &str) -> Self {
        if name.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            IndexedName::Inline {
                len: name.len() as u8,
                bytes,
            }
        } else {
            IndexedName::Boxed(name.into())
        }
    }

    pub(super) fn as_str(&self) -> &str {
        match self {
            // The bytes were copied from a `str` up to a length that fits, so they are UTF-8.
            IndexedName::Inline { len, bytes } => {
                std::str::from_utf8(&bytes[..*len as usize]).unwrap_or_default()
            }
            IndexedName::Boxed(name) => name,
        }
    }
}

#[derive(Clone, Default)]
pub(super) struct DotIndex {
    /// A number for each actor whose dots were ever indexed here. It never shrinks: a set sees
    /// few actors, and a number outliving its dots costs nothing.
    actors: BTreeMap<Actor, u32>,
    /// (actor number, counter, element) for each dot each element holds. A dot belongs to one
    /// element in any state this code builds; a decoded state that says otherwise is indexed
    /// faithfully all the same.
    held: BTreeSet<(u32, u64, IndexedName)>,
}

/// Builds an index one element at a time, sorting once at the end: decoding feeds it each entry
/// while the entry is fresh in the cache, instead of walking the set again afterwards.
#[derive(Default)]
pub(super) struct IndexBuilder {
    index: DotIndex,
    held: Vec<(u32, u64, IndexedName)>,
    /// Most dots come from few actors, in runs: the number is looked up once per run.
    last: Option<(Actor, u32)>,
}

impl IndexBuilder {
    pub(super) fn add(&mut self, name: &str, dots: &BTreeSet<Dot>) {
        for d in dots {
            let n = match &self.last {
                Some((a, n)) if a == actor(d) => *n,
                _ => {
                    let n = self.index.number(actor(d));
                    self.last = Some((actor(d).clone(), n));
                    n
                }
            };
            self.held.push((n, counter(d), IndexedName::new(name)));
        }
    }

    pub(super) fn finish(mut self) -> DotIndex {
        // Collecting sorts once and builds the tree in bulk.
        self.index.held = self.held.into_iter().collect();
        self.index
    }
}

impl DotIndex {
    pub(super) fn build<'a>(
        entries: impl Iterator<Item = (&'a String, &'a BTreeSet<Dot>)>,
    ) -> Self {
        let mut builder = IndexBuilder::default();
        for (name, dots) in entries {
            builder.add(name, dots);
        }
        builder.finish()
    }

    /// Whether some element holds a dot with counter 0, which no replica mints (such dots sort
    /// first among their actor's).
    pub(super) fn holds_counter_zero(&self) -> bool {
        self.actors.values().any(|&n| {
            self.held
                .range((n, 0, IndexedName::MIN)..)
                .next()
                .is_some_and(|(m, c, _)| *m == n && *c == 0)
        })
    }

    fn number(&mut self, actor: &Actor) -> u32 {
        if let Some(&n) = self.actors.get(actor) {
            return n;
        }
        // More than 2^32 actors cannot fit in memory before this wraps.
        let n = self.actors.len() as u32;
        self.actors.insert(actor.clone(), n);
        n
    }

    pub(super) fn insert(&mut self, d: &Dot, name: &str) {
        let n = self.number(actor(d));
        self.held.insert((n, counter(d), IndexedName::new(name)));
    }

    pub(super) fn remove(&mut self, d: &Dot, name: &str) {
        if let Some(&n) = self.actors.get(actor(d)) {
            self.held.remove(&(n, counter(d), IndexedName::new(name)));
        }
    }

    /// Each (dot, element) held with a dot of `actor` numbered `first..=last`.
    pub(super) fn holding<'a>(
        &'a self,
        actor: &'a Actor,
        first: u64,
        last: u64,
    ) -> impl Iterator<Item = (Dot, &'a str)> + 'a {
        let number = self.actors.get(actor).copied();
        number.into_iter().flat_map(move |n| {
            self.held
                .range((n, first, IndexedName::MIN)..)
                .take_while(move |(m, c, _)| *m == n && *c <= last)
                .map(move |(_, c, name)| (dot(actor, *c), name.as_str()))
        })
    }

    /// Every (dot, element) pair, for tests to compare indexes whatever their numbering.
    #[cfg(test)]
    pub(super) fn pairs(&self) -> BTreeSet<(Dot, String)> {
        let actors: BTreeMap<u32, &Actor> = self.actors.iter().map(|(a, &n)| (n, a)).collect();
        self.held
            .iter()
            .map(|(n, c, name)| (dot(actors[n], *c), name.as_str().to_string()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_their_text_inline_or_boxed_and_the_least_sorts_first() {
        for name in [
            "",
            "x",
            "exactly-22-bytes-long!",
            "twenty-three bytes long",
            "é∂",
        ] {
            let indexed = IndexedName::new(name);
            assert_eq!(indexed.as_str(), name);
            assert!(IndexedName::MIN <= indexed);
            assert_eq!(
                matches!(indexed, IndexedName::Boxed(_)),
                name.len() > INLINE
            );
        }
    }
}
