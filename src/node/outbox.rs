//! Packing what the core sends: membership probes become datagrams that also carry piggybacked
//! membership updates and rumors up to the datagram budget; fresh rumors are pushed to `fanout`
//! peers in as few datagrams as fit, topped up with rumors still being retransmitted, and a
//! rumor too large for one travels as a frame. Probes carry a pull summary; a pull is answered
//! with the rumors the asker lacks.

use super::cluster::Outbound;
use super::Node;
use crate::clock::NodeId;
use crate::gossip::rumor::{Rumor, SeenSummary};
use crate::membership::{Member, MemberState, Outgoing, SwimMessage};
use crate::store::Store;
use crate::wire::{encoded_len, Datagram, Frame, FrameBody, MAX_DATAGRAM};
use core::net::SocketAddr;
use rand::seq::SliceRandom;

/// Largest pull summary a probe carries (bytes): a third of the datagram, so that membership
/// updates and rumors still fit. A node whose summary is larger (hundreds of origins, or many
/// out-of-order sequence numbers) does not pull; retransmission and anti-entropy still reach it.
const MAX_PULL_SUMMARY: usize = MAX_DATAGRAM / 3;

/// Accepts rumors while they still fit in a datagram that is already `size` bytes long.
fn fitting(mut size: usize) -> impl FnMut(&Rumor) -> bool {
    move |rumor| {
        let len = encoded_len(rumor);
        let fits = size + len <= MAX_DATAGRAM;
        if fits {
            size += len;
        }
        fits
    }
}

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
            let membership = &self.cluster.membership;
            let member = membership.member_by_addr(to);
            let to_id = member.map(|m| m.id.clone());
            // A member we suspect hears of it first, so that it refutes at once (Lifeguard's
            // buddy system).
            let told = member.and_then(|m| membership.suspicion_to_tell(m));
            let datagram = self.datagram(Some(msg), to_id.as_ref(), told.into_iter().collect());
            self.cluster.outbox.push(Outbound::Datagram {
                to,
                to_id,
                datagram,
            });
        }
        for name in self.cluster.membership.take_resolve_wanted() {
            self.cluster.outbox.push(Outbound::ResolveSeed { name });
        }
    }

    /// Sends the record of every member this node holds alive to each member that joined or
    /// came back ([`crate::membership::Membership::take_list_wanted`]), as piggybacked updates in
    /// as many datagrams as it takes (any version applies them). Only alive ones: this node's
    /// own suspicions and verdicts may be stale (it may be the one coming back from a
    /// partition), and pushed at once they would make the receiver suspect or bury members that
    /// are up until they refute; gossip carries them at its usual pace.
    pub(super) fn send_member_lists(&mut self) {
        for to in self.cluster.membership.take_list_wanted() {
            let to_id = self
                .cluster
                .membership
                .member_by_addr(to)
                .map(|m| m.id.clone());
            let members: Vec<Member> = self
                .cluster
                .membership
                .members()
                .filter(|m| m.id != self.id && m.gossip_addr != to)
                .filter(|m| m.state == MemberState::Alive)
                .cloned()
                .collect();
            let mut datagrams = Vec::new();
            let mut datagram = self.bare_datagram();
            for member in members {
                datagram.updates.push(member);
                if encoded_len(&datagram) > MAX_DATAGRAM && datagram.updates.len() > 1 {
                    let member = datagram.updates.pop();
                    datagrams.push(std::mem::replace(&mut datagram, self.bare_datagram()));
                    datagram.updates.extend(member);
                }
            }
            if !datagram.updates.is_empty() {
                datagrams.push(datagram);
            }
            for datagram in datagrams {
                self.cluster.outbox.push(Outbound::Datagram {
                    to,
                    to_id: to_id.clone(),
                    datagram,
                });
            }
        }
    }

    /// A datagram from this node, filled with membership updates and then rumors for `to_id`
    /// up to the datagram budget.
    pub(super) fn datagram(
        &mut self,
        swim: Option<SwimMessage>,
        to_id: Option<&NodeId>,
        mut updates: Vec<Member>,
    ) -> Datagram {
        let max = self.cluster.membership.config().max_piggyback;
        updates.extend(self.cluster.membership.updates_to_send(max));
        let probe = matches!(swim, Some(SwimMessage::Ping { .. }));
        let mut datagram = Datagram {
            from: self.cluster.membership.me().clone(),
            swim,
            updates,
            rumors: Vec::new(),
            pull: None,
        };
        if probe {
            // A probe asks for what this node lacks (Karp et al., 2000: push-pull), when its
            // summary leaves most of the datagram to piggybacked updates and rumors.
            let summary = self.cluster.rumors.summary();
            let len = encoded_len(&summary);
            if len <= MAX_PULL_SUMMARY && encoded_len(&datagram) + len <= MAX_DATAGRAM {
                datagram.pull = Some(summary);
            }
        }
        if let Some(peer) = to_id {
            let fits = fitting(encoded_len(&datagram));
            datagram.rumors = self.cluster.rumors.piggyback(peer, fits);
        }
        datagram
    }

    /// A datagram from this node that carries nothing yet.
    pub(super) fn bare_datagram(&self) -> Datagram {
        Datagram {
            from: self.cluster.membership.me().clone(),
            swim: None,
            updates: Vec::new(),
            rumors: Vec::new(),
            pull: None,
        }
    }

    /// Answers a pull request from `asker` with the queued rumors its summary shows it lacks, in
    /// one datagram (nothing is sent when it lacks none of them).
    pub(super) fn answer_pull(&mut self, to: SocketAddr, asker: &NodeId, summary: &SeenSummary) {
        let mut datagram = self.bare_datagram();
        let fits = fitting(encoded_len(&datagram));
        datagram.rumors = self.cluster.rumors.answer_pull(summary, fits);
        if datagram.rumors.is_empty() {
            return;
        }
        self.cluster.stats.rumors_pushed += datagram.rumors.len() as u64;
        self.cluster.outbox.push(Outbound::Datagram {
            to,
            to_id: Some(asker.clone()),
            datagram,
        });
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
            let empty = self.bare_datagram();
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
            let pushed: Vec<(crate::clock::ReplicaId, u64)> = current
                .rumors
                .iter()
                .map(|r| (r.origin.clone(), r.seq))
                .collect();
            let mut fits = fitting(size);
            let extra = self.cluster.rumors.piggyback(&peer, |rumor| {
                let again = pushed
                    .iter()
                    .any(|(o, s)| *o == rumor.origin && *s == rumor.seq);
                !again && fits(rumor)
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

#[cfg(test)]
mod tests {
    use super::super::{ClusterConfig, Node, Write};
    use super::*;
    use crate::crdt::Value;
    use crate::membership::MemberState;
    use crate::store::MemoryStore;

    fn id(s: &str) -> NodeId {
        NodeId::new(s).unwrap()
    }

    fn member(name: &str, port: u16) -> Member {
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        Member {
            id: id(name),
            gossip_addr: addr,
            http_addr: addr,
            state: MemberState::Alive,
            incarnation: 1,
        }
    }

    fn ping(from: &Member, pull: Option<SeenSummary>) -> Datagram {
        Datagram {
            from: from.clone(),
            swim: Some(SwimMessage::Ping { probe: 1 }),
            updates: Vec::new(),
            rumors: Vec::new(),
            pull,
        }
    }

    /// Node "a" with one peer "b" and one write of its own.
    fn node_with_a_write() -> (Node<MemoryStore>, Member) {
        let mut config = ClusterConfig::standalone();
        config.gossip_addr = SocketAddr::from(([127, 0, 0, 1], 7101));
        let mut node = Node::open_in_cluster(MemoryStore::new(), id("a"), config).unwrap();
        let b = member("b", 7102);
        node.handle_datagram(1, b.gossip_addr, ping(&b, None))
            .unwrap();
        node.handle_write(
            2,
            Write::KvPut {
                key: "k".into(),
                value: Value {
                    content_type: "text/plain".into(),
                    data: b"v".to_vec(),
                },
                ttl_ms: None,
            },
        )
        .unwrap();
        node.take_outbound();
        (node, b)
    }

    fn pull_answers(out: &[Outbound]) -> Vec<&Datagram> {
        out.iter()
            .filter_map(|o| match o {
                Outbound::Datagram { datagram, .. } if datagram.swim.is_none() => Some(datagram),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_probe_carrying_a_summary_is_answered_with_what_the_prober_lacks() {
        let (mut node, b) = node_with_a_write();
        node.handle_datagram(3, b.gossip_addr, ping(&b, Some(SeenSummary::default())))
            .unwrap();
        let out = node.take_outbound();
        let answers = pull_answers(&out);
        assert_eq!(answers.len(), 1, "{out:?}");
        let seqs: Vec<(&str, u64)> = answers[0]
            .rumors
            .iter()
            .map(|r| (r.origin.node.as_str(), r.seq))
            .collect();
        assert_eq!(seqs, vec![("a", 1)]);
        // A prober that has it gets no answer (the ack still goes).
        let mut has_it = crate::gossip::rumor::RumorMill::new(Default::default());
        has_it.receive(answers[0].rumors[0].clone(), &id("a"), 2, true);
        node.handle_datagram(4, b.gossip_addr, ping(&b, Some(has_it.summary())))
            .unwrap();
        let out = node.take_outbound();
        assert!(pull_answers(&out).is_empty(), "{out:?}");
        assert!(out
            .iter()
            .any(|o| matches!(o, Outbound::Datagram { datagram, .. }
            if matches!(datagram.swim, Some(SwimMessage::Ack { .. })))));
    }

    #[test]
    fn probes_carry_this_nodes_summary_and_other_datagrams_do_not() {
        let (mut node, b) = node_with_a_write();
        let probe = node.datagram(
            Some(SwimMessage::Ping { probe: 7 }),
            Some(&b.id),
            Vec::new(),
        );
        let summary = probe.pull.expect("a probe pulls");
        assert!(summary.has_seen(node.replica(), 1));
        let ack = node.datagram(
            Some(SwimMessage::Ack {
                probe: 7,
                clock_ms: 0,
            }),
            Some(&b.id),
            Vec::new(),
        );
        assert_eq!(ack.pull, None);
    }

    #[test]
    fn a_summary_too_large_for_a_probe_is_left_out() {
        let (mut node, b) = node_with_a_write();
        // Rumors from 200 origins (a large cluster): the summary outgrows its share.
        let rumors = (0..200u64)
            .map(|i| crate::gossip::rumor::Rumor {
                origin: crate::clock::ReplicaId::new(
                    id(&format!("origin-with-a-long-name-{i}")),
                    i,
                ),
                seq: 1,
                key: crate::store::StoreKey::kv(format!("k{i}")),
                delta: crate::crdt::KeyState::Register(crate::crdt::LwwRegister::write(
                    crate::clock::Timestamp::from_raw(i + 10),
                    id("x"),
                    None,
                )),
            })
            .collect();
        node.handle_frame(
            5,
            Frame {
                from: b.id.clone(),
                body: FrameBody::Rumors(rumors),
            },
        )
        .unwrap();
        let probe = node.datagram(
            Some(SwimMessage::Ping { probe: 8 }),
            Some(&b.id),
            Vec::new(),
        );
        assert_eq!(probe.pull, None);
        assert!(crate::wire::encode_datagram(&probe).len() <= MAX_DATAGRAM + 1);
    }

    #[test]
    fn the_writes_of_one_round_reach_each_peer_in_one_datagram() {
        let mut config = ClusterConfig::standalone();
        config.gossip_addr = SocketAddr::from(([127, 0, 0, 1], 7101));
        let mut node = Node::open_in_cluster(MemoryStore::new(), id("a"), config).unwrap();
        for (name, port) in [("b", 7102), ("c", 7103)] {
            let peer = member(name, port);
            node.handle_datagram(1, peer.gossip_addr, ping(&peer, None))
                .unwrap();
        }
        node.take_outbound();
        for i in 0..5 {
            node.handle_write(
                2,
                Write::KvPut {
                    key: format!("k{i}"),
                    value: Value {
                        content_type: "text/plain".into(),
                        data: b"v".to_vec(),
                    },
                    ttl_ms: None,
                },
            )
            .unwrap();
        }
        let out = node.take_outbound();
        let pushes: Vec<(&str, usize)> = out
            .iter()
            .filter_map(|o| match o {
                Outbound::Datagram {
                    to_id, datagram, ..
                } if !datagram.rumors.is_empty() => {
                    Some((to_id.as_ref()?.as_str(), datagram.rumors.len()))
                }
                _ => None,
            })
            .collect();
        assert_eq!(pushes, vec![("b", 5), ("c", 5)]);
    }

    #[test]
    fn rumors_from_peers_in_one_round_reach_each_peer_in_one_datagram() {
        let mut config = ClusterConfig::standalone();
        config.gossip_addr = SocketAddr::from(([127, 0, 0, 1], 7101));
        let mut node = Node::open_in_cluster(MemoryStore::new(), id("a"), config).unwrap();
        let peers: Vec<Member> = [("b", 7102), ("c", 7103), ("d", 7104)]
            .into_iter()
            .map(|(name, port)| member(name, port))
            .collect();
        for peer in &peers {
            node.handle_datagram(1, peer.gossip_addr, ping(peer, None))
                .unwrap();
        }
        node.take_outbound();
        // x's writes 1 and 2 come from b and from c: 1 goes to c and d, 2 to b and d.
        for (seq, from) in [(1, &peers[0]), (2, &peers[1])] {
            let rumor = Rumor {
                origin: crate::clock::ReplicaId::new(id("x"), 0),
                seq,
                key: crate::store::StoreKey::kv(format!("k{seq}")),
                delta: crate::crdt::KeyState::Register(crate::crdt::LwwRegister::write(
                    crate::clock::Timestamp::from_raw(seq + 10),
                    id("x"),
                    None,
                )),
            };
            let mut datagram = ping(from, None);
            datagram.swim = None;
            datagram.rumors = vec![rumor];
            node.handle_datagram(2, from.gossip_addr, datagram).unwrap();
        }
        let out = node.take_outbound();
        let pushes: Vec<(&str, Vec<u64>)> = out
            .iter()
            .filter_map(|o| match o {
                Outbound::Datagram {
                    to_id, datagram, ..
                } if !datagram.rumors.is_empty() => {
                    let seqs = datagram.rumors.iter().map(|r| r.seq).collect();
                    Some((to_id.as_ref()?.as_str(), seqs))
                }
                _ => None,
            })
            .collect();
        assert_eq!(
            pushes,
            vec![("b", vec![2]), ("c", vec![1]), ("d", vec![1, 2])]
        );
    }
}
