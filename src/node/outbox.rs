//! Packing what the core sends: membership probes become datagrams that also carry piggybacked
//! membership updates and rumors up to the datagram budget; fresh rumors are pushed to `fanout`
//! peers in as few datagrams as fit, topped up with rumors still being retransmitted, and a
//! rumor too large for one travels as a frame.

use super::cluster::Outbound;
use super::Node;
use crate::clock::NodeId;
use crate::membership::{Member, Outgoing};
use crate::store::Store;
use crate::wire::{encoded_len, Datagram, Frame, FrameBody, MAX_DATAGRAM};
use core::net::SocketAddr;
use rand::seq::SliceRandom;

impl<S: Store> Node<S> {
    pub(super) fn address_of(&self, id: &NodeId) -> Option<SocketAddr> {
        self.cluster.membership.member(id).map(|m| m.gossip_addr)
    }

    pub(super) fn frame(&self, body: FrameBody) -> Frame {
        Frame {
            from: self.id.clone(),
            body,
        }
    }

    /// Turns membership's outgoing probes into datagrams carrying piggybacked updates and
    /// rumors.
    pub(super) fn send_swim(&mut self, out: Vec<Outgoing>) {
        for Outgoing { to, msg } in out {
            let to_id = self
                .cluster
                .membership
                .member_by_addr(to)
                .map(|m| m.id.clone());
            let datagram = self.datagram(Some(msg), to_id.as_ref(), Vec::new());
            self.cluster.outbox.push(Outbound::Datagram {
                to,
                to_id,
                datagram,
            });
        }
    }

    /// A datagram from this node, filled with membership updates and then rumors for `to_id`
    /// up to the datagram budget.
    pub(super) fn datagram(
        &mut self,
        swim: Option<crate::membership::SwimMessage>,
        to_id: Option<&NodeId>,
        mut updates: Vec<Member>,
    ) -> Datagram {
        let max = self.cluster.membership.config().max_piggyback;
        updates.extend(self.cluster.membership.updates_to_send(max));
        let mut datagram = Datagram {
            from: self.cluster.membership.me().clone(),
            swim,
            updates,
            rumors: Vec::new(),
        };
        if let Some(peer) = to_id {
            let mut size = encoded_len(&datagram);
            datagram.rumors = self.cluster.rumors.piggyback(peer, |rumor| {
                let len = encoded_len(rumor);
                let fits = size + len <= MAX_DATAGRAM;
                if fits {
                    size += len;
                }
                fits
            });
        }
        datagram
    }

    /// Pushes fresh rumors to `fanout` random alive peers, packed into as few datagrams as fit
    /// (a rumor too large for one goes as a frame).
    pub(super) fn push_fresh_rumors(&mut self) {
        let peers: Vec<NodeId> = self
            .cluster
            .membership
            .alive_peers()
            .into_iter()
            .map(|m| m.id.clone())
            .collect();
        let rng = &mut self.cluster.rng;
        let pushes = self.cluster.rumors.flush(&peers, |eligible, k| {
            eligible.choose_multiple(rng, k).cloned().collect()
        });
        for (peer, rumors) in pushes {
            let Some(to) = self.address_of(&peer) else {
                continue;
            };
            self.cluster.stats.rumors_pushed += rumors.len() as u64;
            let me = self.cluster.membership.me().clone();
            let empty = Datagram {
                from: me,
                swim: None,
                updates: Vec::new(),
                rumors: Vec::new(),
            };
            let base = encoded_len(&empty);
            let mut current = empty.clone();
            let mut size = base;
            for rumor in rumors {
                let len = encoded_len(&rumor);
                if base + len > MAX_DATAGRAM {
                    self.cluster.outbox.push(Outbound::Frame {
                        to,
                        to_id: Some(peer.clone()),
                        frame: self.frame(FrameBody::Rumors(vec![rumor])),
                    });
                    continue;
                }
                if size + len > MAX_DATAGRAM {
                    let full = std::mem::replace(&mut current, empty.clone());
                    self.cluster.outbox.push(Outbound::Datagram {
                        to,
                        to_id: Some(peer.clone()),
                        datagram: full,
                    });
                    size = base;
                }
                size += len;
                current.rumors.push(rumor);
            }
            // Top the last datagram up with rumors still being retransmitted: the datagram
            // goes anyway, so they cost no extra message (counter-based rumor mongering
            // carried by pushes as well as by probes).
            let pushed: Vec<(NodeId, u64)> = current
                .rumors
                .iter()
                .map(|r| (r.origin.clone(), r.seq))
                .collect();
            let extra = self.cluster.rumors.piggyback(&peer, |rumor| {
                let len = encoded_len(rumor);
                let fits = size + len <= MAX_DATAGRAM
                    && !pushed
                        .iter()
                        .any(|(o, s)| *o == rumor.origin && *s == rumor.seq);
                if fits {
                    size += len;
                }
                fits
            });
            current.rumors.extend(extra);
            if !current.rumors.is_empty() {
                self.cluster.outbox.push(Outbound::Datagram {
                    to,
                    to_id: Some(peer.clone()),
                    datagram: current,
                });
            }
        }
    }
}
