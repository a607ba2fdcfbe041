//! TEMPORARY STUB
use crate::crdt::KeyState;
use crate::store::{MerkleIndex, StoreKey};
use serde::{Deserialize, Serialize};
pub trait SyncSource { fn merkle(&self) -> &MerkleIndex; fn leaf_keys(&self, leaf: u16) -> Vec<(StoreKey, [u8; 8])>; fn state(&self, key: &StoreKey) -> Option<KeyState>; }
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SyncMessage { X }
pub struct SyncSession {}
pub struct SyncStep { pub send: Option<SyncMessage>, pub merge: Vec<(StoreKey, KeyState)>, pub done: bool }
pub struct SyncStats { pub bytes: u64 }
impl SyncSession {
    pub fn start(_source: &impl SyncSource) -> (SyncSession, SyncMessage) { todo!() }
    pub fn handle(&mut self, _source: &impl SyncSource, _reply: SyncMessage) -> SyncStep { todo!() }
    pub fn stats(&self) -> SyncStats { todo!() }
}
pub fn respond(_source: &impl SyncSource, _request: SyncMessage) -> (Option<SyncMessage>, Vec<(StoreKey, KeyState)>) { todo!() }
