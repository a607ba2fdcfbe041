//! The OR-set's derived index from dot to element: which elements hold each dot, sorted by actor
//! and counter, so that a merge finds the elements a delta's context covers without walking the
//! set. Never encoded: the set rebuilds it from its entries on decode.
//!
//! Actors are numbered within the index, so its keys compare as integers and hold no copy of a
//! node id, and element names are shared with the set's entries: building, cloning and dropping
//! the index allocates only the tree's own nodes, nothing per element.

use super::context::{actor, counter, dot, Actor};
use crate::clock::Dot;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// An element's name, shared between the set's entries and its index.
pub(super) type Name = Arc<str>;

#[derive(Clone, Default)]
pub(super) struct DotIndex {
    /// A number for each actor whose dots were ever indexed here. It never shrinks: a set sees
    /// few actors, and a number outliving its dots costs nothing.
    actors: BTreeMap<Actor, u32>,
    /// (actor number, counter, element) for each dot each element holds. A dot belongs to one
    /// element in any state this code builds; a decoded state that says otherwise is indexed
    /// faithfully all the same.
    held: BTreeSet<(u32, u64, Name)>,
}

impl DotIndex {
    pub(super) fn build<'a>(entries: impl Iterator<Item = (&'a Name, &'a BTreeSet<Dot>)>) -> Self {
        let mut index = DotIndex::default();
        let mut held = Vec::new();
        for (name, dots) in entries {
            for d in dots {
                held.push((index.number(actor(d)), counter(d), name.clone()));
            }
        }
        // Collecting sorts once and builds the tree in bulk.
        index.held = held.into_iter().collect();
        index
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

    pub(super) fn insert(&mut self, d: &Dot, name: &Name) {
        let n = self.number(actor(d));
        self.held.insert((n, counter(d), name.clone()));
    }

    pub(super) fn remove(&mut self, d: &Dot, name: &Name) {
        if let Some(&n) = self.actors.get(actor(d)) {
            self.held.remove(&(n, counter(d), name.clone()));
        }
    }

    /// Each (dot, element) held with a dot of `actor` numbered `first..=last`.
    pub(super) fn holding<'a>(
        &'a self,
        actor: &'a Actor,
        first: u64,
        last: u64,
    ) -> impl Iterator<Item = (Dot, &'a Name)> + 'a {
        let number = self.actors.get(actor).copied();
        number.into_iter().flat_map(move |n| {
            self.held
                .range((n, first, Name::default())..)
                .take_while(move |(m, c, _)| *m == n && *c <= last)
                .map(move |(_, c, name)| (dot(actor, *c), name))
        })
    }

    /// Every (dot, element) pair, for tests to compare indexes whatever their numbering.
    #[cfg(test)]
    pub(super) fn pairs(&self) -> BTreeSet<(Dot, Name)> {
        let actors: BTreeMap<u32, &Actor> = self.actors.iter().map(|(a, &n)| (n, a)).collect();
        self.held
            .iter()
            .map(|(n, c, name)| (dot(actors[n], *c), name.clone()))
            .collect()
    }
}
