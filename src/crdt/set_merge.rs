//! The OR-set merge as a plan: what joining a state or delta into a replica changes, computed by
//! reading only the elements it touches. The replica may be an [`OrSet`] in memory or a set kept
//! one element per row in a store ([`SetReplica`] is all the plan needs), so one algorithm serves
//! both, and applying the plan is the only thing each does its own way.
//!
//! Pure: no I/O of its own; a replica's reads may fail, and the plan passes that on.

use super::{CausalContext, OrSet};
use crate::clock::{Dot, ReplicaId};
use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};

/// Read access to one replica of a set, as much as a merge needs: its context, the dots of one
/// element, and the elements holding the dots of a run.
pub trait SetReplica {
    type Error;

    fn context(&self) -> &CausalContext;

    /// The dots of the adds that keep `element` in the set (empty when absent).
    fn dots(&self, element: &str) -> Result<Cow<'_, BTreeSet<Dot>>, Self::Error>;

    /// Calls `found` with (dot, element) for each dot of `actor` numbered `first..=last` that an
    /// element holds, in dot order.
    fn for_each_holding(
        &self,
        actor: &ReplicaId,
        first: u64,
        last: u64,
        found: &mut dyn FnMut(Dot, &str),
    ) -> Result<(), Self::Error>;
}

/// How one element's dots change: before and after (an element without dots is absent).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ElementChange {
    pub before: BTreeSet<Dot>,
    pub after: BTreeSet<Dot>,
}

impl ElementChange {
    /// The dots the element gains.
    pub fn gained(&self) -> impl Iterator<Item = &Dot> {
        self.after.difference(&self.before)
    }

    /// The dots the element loses.
    pub fn lost(&self) -> impl Iterator<Item = &Dot> {
        self.before.difference(&self.after)
    }
}

/// What a merge changes in a replica: its new context, and each element whose dots change.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SetChange {
    pub context: CausalContext,
    pub elements: BTreeMap<String, ElementChange>,
}

/// Plans joining `other` into `replica`; `None` when it changes nothing.
///
/// A dot survives if both sides hold it, or if the side lacking it never saw it. Elements of the
/// replica that `other` lacks can only lose dots `other` saw, so they are found through the dots
/// of `other`'s context; the others are the elements `other` holds.
pub fn plan<R: SetReplica>(replica: &R, other: &OrSet) -> Result<Option<SetChange>, R::Error> {
    let mut forgotten: Vec<(String, Dot)> = Vec::new();
    for (actor, first, last) in other.context().ranges() {
        replica.for_each_holding(actor, first, last, &mut |dot, element| {
            if !other.contains(element) {
                forgotten.push((element.to_string(), dot));
            }
        })?;
    }
    let mut elements: BTreeMap<String, ElementChange> = BTreeMap::new();
    for (element, dot) in forgotten {
        let change = match elements.entry(element) {
            std::collections::btree_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::btree_map::Entry::Vacant(e) => {
                let before = replica.dots(e.key())?.into_owned();
                e.insert(ElementChange {
                    after: before.clone(),
                    before,
                })
            }
        };
        change.after.remove(&dot);
    }
    for (element, theirs) in other.entries() {
        let mine = replica.dots(element)?;
        let lost: Vec<&Dot> = mine
            .iter()
            .filter(|d| !theirs.contains(d) && other.context().contains(d))
            .collect();
        let gained: Vec<&Dot> = theirs
            .iter()
            .filter(|d| !mine.contains(d) && !replica.context().contains(d))
            .collect();
        if lost.is_empty() && gained.is_empty() {
            continue;
        }
        let mut after = mine.as_ref().clone();
        for dot in lost {
            after.remove(dot);
        }
        after.extend(gained.into_iter().cloned());
        let before = mine.into_owned();
        elements.insert(element.clone(), ElementChange { before, after });
    }
    let mut context = replica.context().clone();
    let widened = context.merge(other.context());
    if elements.is_empty() && !widened {
        return Ok(None);
    }
    Ok(Some(SetChange { context, elements }))
}

/// The elements `names` of `replica` with its context: a replica holding only what an edit of
/// those elements reads, whose edit's delta is the one the whole replica would produce.
pub fn excerpt<'a, R: SetReplica>(
    replica: &R,
    names: impl IntoIterator<Item = &'a str>,
) -> Result<OrSet, R::Error> {
    let mut entries = BTreeMap::new();
    for name in names {
        if entries.contains_key(name) {
            continue;
        }
        let dots = replica.dots(name)?;
        if !dots.is_empty() {
            entries.insert(name.to_string(), dots.into_owned());
        }
    }
    Ok(OrSet::from_parts(replica.context().clone(), entries))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::NodeId;

    fn replica(s: &str) -> ReplicaId {
        ReplicaId::new(NodeId::new(s).unwrap(), 1)
    }

    proptest::proptest! {
        /// An edit of an excerpt holding only the elements it names produces the delta an edit
        /// of the whole set produces, and planning that delta against the whole set changes it
        /// as merging does.
        #[test]
        fn an_excerpt_edits_as_the_whole_set(
            history in proptest::collection::vec((0usize..3, 0usize..6, proptest::bool::ANY), 0..30),
            remove in proptest::collection::vec(0usize..6, 0..4),
            add in proptest::collection::vec(0usize..6, 0..4),
        ) {
            let names = ["a", "b", "c", "d", "e", "f"];
            let actors = [replica("x"), replica("y"), replica("z")];
            let mut whole = OrSet::new();
            let mut others = vec![OrSet::new(); 3];
            for (r, e, adds) in history {
                let delta = match adds {
                    true => others[r].add(&actors[r], names[e]),
                    false => others[r].remove(names[e]),
                };
                let _ = whole.merge(&delta);
                let snapshot = whole.clone();
                let _ = others[r].merge(&snapshot);
            }
            let remove: Vec<&str> = remove.into_iter().map(|i| names[i]).collect();
            let add: Vec<&str> = add.into_iter().map(|i| names[i]).collect();
            let Ok(mut excerpt) = excerpt(&whole, remove.iter().chain(&add).copied());
            let from_excerpt = excerpt.edit(&actors[0], remove.iter().copied(), add.iter().copied());
            let mut edited = whole.clone();
            let from_whole = edited.edit(&actors[0], remove.iter().copied(), add.iter().copied());
            proptest::prop_assert_eq!(&from_excerpt, &from_whole);
            let mut merged = whole.clone();
            let _ = merged.merge(&from_whole);
            proptest::prop_assert_eq!(merged, edited);
        }
    }
}
