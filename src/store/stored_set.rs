//! A set as a store keeps it, read piecewise: the [`SetReplica`] a merge or an edit plans against
//! without loading the set's other elements. Reads only; the core writes what it planned as a
//! [`super::SetWrite`].

use super::{SetHeader, Store, StoreError, StoreKey};
use crate::clock::{Dot, ReplicaId};
use crate::crdt::{CausalContext, SetReplica};
use std::borrow::Cow;
use std::collections::BTreeSet;

pub struct StoredSet<'a, S: Store + ?Sized> {
    store: &'a S,
    key: &'a StoreKey,
    header: SetHeader,
    existed: bool,
}

impl<'a, S: Store + ?Sized> StoredSet<'a, S> {
    /// Set `key` of `store`; an empty set if it was never written.
    pub fn open(store: &'a S, key: &'a StoreKey) -> Result<Self, StoreError> {
        let header = store.set_header(key)?;
        Ok(StoredSet {
            store,
            key,
            existed: header.is_some(),
            header: header.unwrap_or_default(),
        })
    }

    pub fn header(&self) -> &SetHeader {
        &self.header
    }

    /// Whether the set was ever written.
    pub fn existed(&self) -> bool {
        self.existed
    }
}

impl<S: Store + ?Sized> SetReplica for StoredSet<'_, S> {
    type Error = StoreError;

    fn context(&self) -> &CausalContext {
        &self.header.context
    }

    fn dots(&self, element: &str) -> Result<Cow<'_, BTreeSet<Dot>>, StoreError> {
        // An empty set has no element rows to read.
        if self.header.count == 0 {
            return Ok(Cow::Owned(BTreeSet::new()));
        }
        Ok(Cow::Owned(self.store.set_dots(self.key, element)?))
    }

    fn for_each_holding(
        &self,
        actor: &ReplicaId,
        first: u64,
        last: u64,
        found: &mut dyn FnMut(Dot, &str),
    ) -> Result<(), StoreError> {
        if self.header.count == 0 {
            return Ok(());
        }
        self.store.set_holding(self.key, actor, first, last, found)
    }
}
