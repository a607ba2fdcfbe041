//! TEMPORARY STUB
use crate::clock::NodeId;
use core::net::SocketAddr;
use serde::{Deserialize, Serialize};
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberState {
    Alive,
    Suspect,
    Dead,
    Left,
}
impl std::fmt::Display for MemberState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "x")
    }
}
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub id: NodeId,
    pub gossip_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub state: MemberState,
    pub incarnation: u64,
}
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SwimMessage {
    Ping { probe: u64 },
    Ack { probe: u64 },
}
pub struct Outgoing {
    pub to: SocketAddr,
    pub msg: SwimMessage,
}
pub enum MemberEvent {
    Joined(Member),
    StateChanged { member: Member, from: MemberState },
}
#[derive(Clone, Debug)]
pub struct MembershipConfig {}
impl MembershipConfig {
    pub fn lan() -> Self {
        todo!()
    }
    pub fn for_sim() -> Self {
        todo!()
    }
}
pub struct Membership {}
impl Membership {
    pub fn new(_me: Member, _seeds: Vec<SocketAddr>, _config: MembershipConfig) -> Self {
        todo!()
    }
    pub fn handle_message(
        &mut self,
        _now_ms: u64,
        _sender: &Member,
        _from_addr: SocketAddr,
        _msg: SwimMessage,
        _out: &mut Vec<Outgoing>,
    ) {
        todo!()
    }
    pub fn apply_updates(&mut self, _now_ms: u64, _updates: &[Member]) {
        todo!()
    }
    pub fn handle_tick(
        &mut self,
        _now_ms: u64,
        _rng: &mut impl rand::Rng,
        _out: &mut Vec<Outgoing>,
    ) {
        todo!()
    }
    pub fn leave(&mut self, _now_ms: u64, _rng: &mut impl rand::Rng, _out: &mut Vec<Outgoing>) {
        todo!()
    }
    pub fn updates_to_send(&mut self, _max: usize) -> Vec<Member> {
        todo!()
    }
    pub fn correction_for(&self, _peer: &Member) -> Option<Member> {
        todo!()
    }
    pub fn me(&self) -> &Member {
        todo!()
    }
    pub fn members(&self) -> impl Iterator<Item = &Member> {
        std::iter::empty()
    }
    pub fn member(&self, _id: &NodeId) -> Option<&Member> {
        todo!()
    }
    pub fn alive_peers(&self) -> Vec<&Member> {
        todo!()
    }
    pub fn drain_events(&mut self) -> Vec<MemberEvent> {
        todo!()
    }
}
