//! Observed-remove set with add-wins semantics, in the optimised ORSWOT form: each element keeps
//! the dots of the adds that introduced it, and one causal context records every dot the replica
//! has seen. A remove only forgets the dots it observed, so a concurrent add (an unseen dot)
//! survives; removed elements leave no per-element tombstone behind.
//!
//! Costs, for a set of n elements: a local add or remove takes O(log n); merging a delta takes
//! O(size of the delta · log n), the size counting the dots of its context; a full-state merge
//! takes O(n log n). A derived index from dot to element, never encoded and built while decoding,
//! finds the elements a delta's context covers without walking the others.

use super::context::never_minted;
use super::dot_index::{DotIndex, IndexBuilder};
use super::set_merge::{self, SetChange, SetReplica};
use super::{CausalContext, Merged};
use crate::clock::{Dot, ReplicaId};
use serde::de::{Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::convert::Infallible;
use std::fmt;

/// Encoded as the context, then the entries (a map from element to dots): records, Merkle item
/// hashes and the wire depend on these bytes, pinned by a golden vector in
/// `tests/store_migrations.rs`.
#[derive(Clone, Default, Serialize, Deserialize)]
#[serde(from = "StoredSet")]
pub struct OrSet {
    context: CausalContext,
    entries: BTreeMap<String, BTreeSet<Dot>>,
    /// Derived from `entries`: not encoded, built while decoding, left out of equality.
    #[serde(skip)]
    index: DotIndex,
}

/// The encoded form, without the index.
#[derive(Deserialize)]
#[serde(rename = "OrSet")]
struct StoredSet {
    context: CausalContext,
    entries: StoredEntries,
}

impl From<StoredSet> for OrSet {
    fn from(stored: StoredSet) -> Self {
        let StoredEntries { mut entries, index } = stored.entries;
        // No replica mints a dot with counter 0, and every context covers one, so the first merge
        // would drop it; decoding drops it at once, and the merge never has to look for it.
        if index.holds_counter_zero() {
            entries.retain(|_, dots| {
                let held = !dots.is_empty();
                dots.retain(|dot| !never_minted(dot));
                !held || !dots.is_empty()
            });
            return OrSet::from_parts(stored.context, entries);
        }
        OrSet {
            context: stored.context,
            entries,
            index,
        }
    }
}

/// Decodes what a `BTreeMap<String, BTreeSet<Dot>>` encodes (the last of equal keys wins, as
/// there), indexing each entry as it arrives.
struct StoredEntries {
    entries: BTreeMap<String, BTreeSet<Dot>>,
    index: DotIndex,
}

impl<'de> Deserialize<'de> for StoredEntries {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct EntriesVisitor;
        impl<'de> Visitor<'de> for EntriesVisitor {
            type Value = StoredEntries;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a map from element to dots")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StoredEntries, A::Error> {
                let mut entries = BTreeMap::new();
                let mut index = IndexBuilder::default();
                let mut repeated = false;
                while let Some((element, dots)) = map.next_entry::<String, BTreeSet<Dot>>()? {
                    index.add(&element, &dots);
                    repeated |= entries.insert(element, dots).is_some();
                }
                // A repeated element indexed dots that its last entry replaced.
                let index = match repeated {
                    true => DotIndex::build(entries.iter()),
                    false => index.finish(),
                };
                Ok(StoredEntries { entries, index })
            }
        }
        deserializer.deserialize_map(EntriesVisitor)
    }
}

impl PartialEq for OrSet {
    fn eq(&self, other: &Self) -> bool {
        self.context == other.context && self.entries == other.entries
    }
}

impl Eq for OrSet {}

impl fmt::Debug for OrSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OrSet")
            .field("context", &self.context)
            .field("entries", &self.entries)
            .finish()
    }
}

impl OrSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// The set with exactly this context and these entries (their dots must be in the context).
    pub fn from_parts(context: CausalContext, entries: BTreeMap<String, BTreeSet<Dot>>) -> Self {
        let index = DotIndex::build(entries.iter());
        OrSet {
            context,
            entries,
            index,
        }
    }

    pub fn contains(&self, element: &str) -> bool {
        self.entries.contains_key(element)
    }

    /// The live elements, sorted.
    pub fn elements(&self) -> impl Iterator<Item = &str> {
        self.entries.keys().map(String::as_str)
    }

    /// The dots of the adds that keep `element` in the set, sorted; none when it is absent. A
    /// remove issued here now would remove exactly these.
    pub fn dots(&self, element: &str) -> impl Iterator<Item = &Dot> {
        self.entries.get(element).into_iter().flatten()
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Adds `element` as `node`, applies it to `self` and returns the delta. The delta's context
    /// also covers the element's older dots, so the new dot replaces them everywhere.
    pub fn add(&mut self, node: &ReplicaId, element: &str) -> OrSet {
        let dot = self.context.next_dot(node);
        let delta = OrSet::addition(element, dot, self.dots_of(element));
        let _ = self.merge(&delta);
        delta
    }

    /// Removes the adds of `element` observed here, applies it to `self` and returns the delta
    /// (empty when the element is absent: there is nothing observed to remove).
    pub fn remove(&mut self, element: &str) -> OrSet {
        let delta = OrSet::removal(self.dots_of(element));
        let _ = self.merge(&delta);
        delta
    }

    /// Removes each of `remove`, then adds each of `add` as `node`, applies them to `self` and
    /// returns one delta with the effect of them all: the join of their deltas, built in one go
    /// instead of merging each into a growing delta. Its context holds every dot the edit
    /// observed or minted; each added element keeps the dot of its last add.
    pub fn edit<'a>(
        &mut self,
        node: &ReplicaId,
        remove: impl IntoIterator<Item = &'a str>,
        add: impl IntoIterator<Item = &'a str>,
    ) -> OrSet {
        let mut seen = Vec::new();
        for element in remove {
            let observed = self.dots_of(element);
            seen.extend(observed.iter().cloned());
            let _ = self.merge(&OrSet::removal(observed));
        }
        let mut added = BTreeMap::new();
        for element in add {
            let dot = self.context.next_dot(node);
            let observed = self.dots_of(element);
            seen.extend(observed.iter().cloned());
            seen.push(dot.clone());
            let _ = self.merge(&OrSet::addition(element, dot.clone(), observed));
            added.insert(element.to_string(), BTreeSet::from([dot]));
        }
        OrSet::from_parts(CausalContext::from_dots(seen), added)
    }

    /// The delta of an add of `element` with the new `dot`, replacing the `observed` ones.
    fn addition(element: &str, dot: Dot, observed: Vec<Dot>) -> OrSet {
        let mut seen = observed;
        seen.push(dot.clone());
        OrSet::from_parts(
            CausalContext::from_dots(seen),
            BTreeMap::from([(element.to_string(), BTreeSet::from([dot]))]),
        )
    }

    /// The delta of a remove that observed `observed`.
    fn removal(observed: Vec<Dot>) -> OrSet {
        OrSet::from_parts(CausalContext::from_dots(observed), BTreeMap::new())
    }

    /// True when merging `self` into anything changes nothing.
    pub fn is_noop_delta(&self) -> bool {
        self.context.is_empty() && self.entries.is_empty()
    }

    /// Joins `other` into `self` (see [`set_merge::plan`]).
    pub fn merge(&mut self, other: &OrSet) -> Merged {
        let Ok(planned) = set_merge::plan(&*self, other);
        match planned {
            Some(change) => {
                self.apply(change);
                Merged::Changed
            }
            None => Merged::Unchanged,
        }
    }

    /// Applies a change planned against `self`.
    pub fn apply(&mut self, change: SetChange) {
        for (element, dots) in &change.elements {
            for dot in dots.lost() {
                self.unlink(element, dot);
            }
            for dot in dots.gained() {
                self.link(element, dot.clone());
            }
        }
        self.context = change.context;
    }

    pub fn context(&self) -> &CausalContext {
        &self.context
    }

    /// Each live element with its dots, sorted by element.
    pub fn entries(&self) -> impl Iterator<Item = (&String, &BTreeSet<Dot>)> {
        self.entries.iter()
    }

    fn dots_of(&self, element: &str) -> Vec<Dot> {
        self.dots(element).cloned().collect()
    }

    /// Gives `element` the dot `dot`, in the entries and the index.
    fn link(&mut self, element: &str, dot: Dot) {
        self.index.insert(&dot, element);
        match self.entries.get_mut(element) {
            Some(dots) => {
                dots.insert(dot);
            }
            None => {
                self.entries
                    .insert(element.to_string(), BTreeSet::from([dot]));
            }
        }
    }

    /// Takes `dot` from `element`, in the entries and the index; an element left without dots
    /// leaves the set. Returns whether `element` held `dot`.
    fn unlink(&mut self, element: &str, dot: &Dot) -> bool {
        let Some(dots) = self.entries.get_mut(element) else {
            return false;
        };
        if !dots.remove(dot) {
            return false;
        }
        if dots.is_empty() {
            self.entries.remove(element);
        }
        self.index.remove(dot, element);
        true
    }
}

impl SetReplica for OrSet {
    type Error = Infallible;

    fn context(&self) -> &CausalContext {
        &self.context
    }

    fn dots(&self, element: &str) -> Result<Cow<'_, BTreeSet<Dot>>, Infallible> {
        Ok(match self.entries.get(element) {
            Some(dots) => Cow::Borrowed(dots),
            None => Cow::Owned(BTreeSet::new()),
        })
    }

    fn for_each_holding(
        &self,
        actor: &ReplicaId,
        first: u64,
        last: u64,
        found: &mut dyn FnMut(Dot, &str),
    ) -> Result<(), Infallible> {
        for (dot, element) in self.index.holding(actor, first, last) {
            found(dot, element);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ReplicaId {
        ReplicaId::new(crate::clock::NodeId::new(s).unwrap(), 0)
    }

    #[test]
    fn concurrent_add_survives_a_remove_that_did_not_observe_it() {
        let mut a = OrSet::new();
        a.add(&id("a"), "x");
        let mut b = a.clone();
        let remove = b.remove("x");
        let readd = a.add(&id("a"), "x");
        let _ = b.merge(&readd);
        let _ = a.merge(&remove);
        assert!(a.contains("x") && b.contains("x"));
        assert_eq!(a, b);
    }

    #[test]
    fn observed_remove_removes_everywhere() {
        let mut a = OrSet::new();
        let add = a.add(&id("a"), "x");
        let mut b = OrSet::new();
        let _ = b.merge(&add);
        let rm = b.remove("x");
        let _ = a.merge(&rm);
        assert!(!a.contains("x"));
        assert_eq!(a, b);
    }

    #[test]
    fn dots_name_the_adds_that_keep_an_element() {
        let dots = |s: &OrSet| s.dots("x").cloned().collect::<Vec<_>>();
        let mut a = OrSet::new();
        assert!(dots(&a).is_empty());
        a.add(&id("a"), "x");
        a.add(&id("a"), "x");
        // A re-add replaces the dots it observed.
        assert_eq!(dots(&a), vec![Dot::new(id("a"), 2)]);
        let mut b = OrSet::new();
        let _ = a.merge(&b.add(&id("b"), "x"));
        assert_eq!(dots(&a), vec![Dot::new(id("a"), 2), Dot::new(id("b"), 1)]);
        a.remove("x");
        assert!(dots(&a).is_empty());
        assert_eq!(b.dots("y").count(), 0);
    }

    #[test]
    fn a_decoded_set_rebuilds_its_index_and_encodes_as_before() {
        let mut a = OrSet::new();
        a.add(&id("a"), "x");
        a.add(&id("a"), "y");
        let bytes = postcard::to_stdvec(&a).unwrap();
        let mut decoded: OrSet = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.index.pairs(), a.index.pairs());
        // A remove delta names no element: only the index finds what its dots cover.
        let mut b = a.clone();
        let rm = b.remove("x");
        assert!(decoded.merge(&rm).changed());
        assert_eq!(decoded, b);
        assert_eq!(
            postcard::to_stdvec(&decoded).unwrap(),
            postcard::to_stdvec(&b).unwrap()
        );
    }

    #[test]
    fn a_repeated_element_decodes_as_its_last_entry_with_a_matching_index() {
        // No replica encodes an element twice; a map decoder keeps the last, and so does this.
        struct Repeated(Vec<(&'static str, BTreeSet<Dot>)>);
        impl Serialize for Repeated {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.collect_map(self.0.iter().map(|(k, v)| (k, v)))
            }
        }
        let (a1, a2) = (Dot::new(id("a"), 1), Dot::new(id("a"), 2));
        let context = CausalContext::from_dots([a1.clone(), a2.clone()]);
        let entries = Repeated(vec![
            ("x", BTreeSet::from([a1])),
            ("x", BTreeSet::from([a2.clone()])),
        ]);
        let bytes = postcard::to_stdvec(&(&context, &entries)).unwrap();
        let decoded: OrSet = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(decoded.dots("x").collect::<Vec<_>>(), vec![&a2]);
        let rebuilt = DotIndex::build(decoded.entries.iter());
        assert_eq!(decoded.index.pairs(), rebuilt.pairs());
    }

    #[test]
    fn an_edit_is_the_join_of_its_operations() {
        let mut base = OrSet::new();
        for e in ["x", "y", "z"] {
            base.add(&id("a"), e);
        }
        let _ = base.merge(&OrSet::new().add(&id("b"), "x"));
        let (remove, add) = (["x", "w", "y"], ["y", "v", "y", "x"]);
        let mut one_by_one = base.clone();
        let mut joined = OrSet::new();
        for e in remove {
            let _ = joined.merge(&one_by_one.remove(e));
        }
        for e in add {
            let _ = joined.merge(&one_by_one.add(&id("a"), e));
        }
        let mut edited = base.clone();
        let delta = edited.edit(&id("a"), remove, add);
        assert_eq!(edited, one_by_one);
        assert_eq!(delta, joined);
        assert_eq!(edited.index.pairs(), one_by_one.index.pairs());
        let _ = base.merge(&delta);
        assert_eq!(base, edited);
    }

    proptest::proptest! {
        /// A stale or missing pair would not always change a merge's result (a stale one is
        /// skipped), but it would grow the index and slow every merge: the index must be exactly
        /// what the entries rebuild, after every operation.
        #[test]
        fn the_index_is_always_what_the_entries_rebuild(
            ops in proptest::collection::vec((0u8..5, 0usize..3, 0usize..4), 0..40),
        ) {
            let nodes = [id("a"), id("b"), id("c")];
            let mut sets = vec![OrSet::new(); 3];
            for (kind, r, e) in ops {
                let element = ["w", "x", "y", "z-a-name-of-more-than-22-bytes"][e];
                let next = (r + 1) % 3;
                match kind {
                    0 => drop(sets[r].add(&nodes[r], element)),
                    1 => drop(sets[r].remove(element)),
                    2 => {
                        let delta = sets[r].remove(element);
                        let _ = sets[next].merge(&delta);
                    }
                    3 => {
                        let whole = sets[next].clone();
                        let _ = sets[r].merge(&whole);
                    }
                    _ => drop(sets[r].edit(&nodes[r], [element, "x"], ["w", element])),
                }
                for set in &sets {
                    let rebuilt = DotIndex::build(set.entries.iter());
                    proptest::prop_assert_eq!(set.index.pairs(), rebuilt.pairs());
                }
            }
        }
    }

    #[test]
    fn removing_an_absent_element_is_a_noop_delta() {
        let mut a = OrSet::new();
        assert!(a.remove("ghost").is_noop_delta());
    }
}
