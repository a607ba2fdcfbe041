//! Observed-remove set with add-wins semantics, in the optimised ORSWOT form: each element keeps
//! the dots of the adds that introduced it, and one causal context records every dot the replica
//! has seen. A remove only forgets the dots it observed, so a concurrent add (an unseen dot)
//! survives; removed elements leave no per-element tombstone behind.

use super::{CausalContext, Merged};
use crate::clock::{Dot, NodeId};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrSet {
    context: CausalContext,
    entries: BTreeMap<String, BTreeSet<Dot>>,
}

impl OrSet {
    pub fn new() -> Self {
        Self::default()
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
    pub fn add(&mut self, node: &NodeId, element: &str) -> OrSet {
        let dot = self.context.next_dot(node);
        let mut seen: Vec<Dot> = self.dots_of(element);
        seen.push(dot.clone());
        let delta = OrSet {
            context: CausalContext::from_dots(seen),
            entries: BTreeMap::from([(element.to_string(), BTreeSet::from([dot]))]),
        };
        let _ = self.merge(&delta);
        delta
    }

    /// Removes the adds of `element` observed here, applies it to `self` and returns the delta
    /// (empty when the element is absent: there is nothing observed to remove).
    pub fn remove(&mut self, element: &str) -> OrSet {
        let delta = OrSet {
            context: CausalContext::from_dots(self.dots_of(element)),
            entries: BTreeMap::new(),
        };
        let _ = self.merge(&delta);
        delta
    }

    /// True when merging `self` into anything changes nothing.
    pub fn is_noop_delta(&self) -> bool {
        self.context.is_empty() && self.entries.is_empty()
    }

    /// Joins `other` into `self`.
    pub fn merge(&mut self, other: &OrSet) -> Merged {
        let context_before = self.context.clone();
        let mut changed = false;
        let keys: BTreeSet<String> = self
            .entries
            .keys()
            .chain(other.entries.keys())
            .cloned()
            .collect();
        for key in keys {
            let empty = BTreeSet::new();
            let mine = self.entries.get(&key).unwrap_or(&empty);
            let theirs = other.entries.get(&key).unwrap_or(&empty);
            // A dot survives if both sides hold it, or if the side lacking it never saw it.
            let kept: BTreeSet<Dot> = mine
                .iter()
                .filter(|d| theirs.contains(d) || !other.context.contains(d))
                .chain(
                    theirs
                        .iter()
                        .filter(|d| !mine.contains(d) && !self.context.contains(d)),
                )
                .cloned()
                .collect();
            if &kept != mine {
                changed = true;
                if kept.is_empty() {
                    self.entries.remove(&key);
                } else {
                    self.entries.insert(key, kept);
                }
            }
        }
        self.context.merge(&other.context);
        Merged::from_changed(changed || context_before != self.context)
    }

    fn dots_of(&self, element: &str) -> Vec<Dot> {
        self.dots(element).cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
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
    fn removing_an_absent_element_is_a_noop_delta() {
        let mut a = OrSet::new();
        assert!(a.remove("ghost").is_noop_delta());
    }
}
