//! Codec versions during a rolling upgrade: this build decodes every version from
//! `OLDEST_VERSION` to `VERSION` into the current types and encodes in each of them. The bytes are
//! pinned by fixtures under `tests/fixtures/wire/v<N>/`: version 2's were written by the last
//! build that spoke it (`v2/generate.rs.txt`), version 3's by `write_current_fixtures` below
//! (see `docs/wire-versions.md`). A change to any wire type that is not a new version fails here.
//!
//! Owns only these checks and the fixtures; it touches no node, socket or store.

use hearsay::clock::{NodeId, ReplicaId, Timestamp};
use hearsay::crdt::{KeyState, LwwRegister, OrSet, PnCounter, Value};
use hearsay::gossip::rumor::{Rumor, SeenRange, SeenSummary};
use hearsay::gossip::sync::{LeafKeys, PackedStates, SyncMessage};
use hearsay::membership::{Member, MemberState, SwimMessage};
use hearsay::store::{Leaf, StoreKey};
use hearsay::wire::{
    decode_datagram, decode_datagram_versioned, decode_frame, decode_frame_versioned,
    encode_datagram, encode_datagram_as, encode_frame, encode_frame_as, Datagram, ForgetValue,
    Frame, FrameBody, SyncAnswer, SyncRequest, SyncStart, WireError, OLDEST_VERSION, VERSION,
};
use std::collections::BTreeSet;
use std::path::PathBuf;

/// The clock the Ack of `datagram_ack` carries in version 3 (version 2 had none).
const ACK_CLOCK_MS: u64 = 1_700_000_001_250;

#[derive(Clone, Debug, PartialEq, Eq)]
enum Message {
    Datagram(Datagram),
    Frame(Frame),
}

impl Message {
    fn encode(&self) -> Vec<u8> {
        match self {
            Message::Datagram(d) => encode_datagram(d),
            Message::Frame(f) => encode_frame(f),
        }
    }

    fn encode_as(&self, version: u8) -> Result<Vec<u8>, WireError> {
        match self {
            Message::Datagram(d) => encode_datagram_as(d, version),
            Message::Frame(f) => encode_frame_as(f, version),
        }
    }

    /// Decodes `bytes` as the same kind of message, with the version read.
    fn decode_like(&self, bytes: &[u8]) -> Result<(u8, Message), WireError> {
        match self {
            Message::Datagram(_) => {
                decode_datagram_versioned(bytes).map(|(v, d)| (v, Message::Datagram(d)))
            }
            Message::Frame(_) => decode_frame_versioned(bytes).map(|(v, f)| (v, Message::Frame(f))),
        }
    }

    /// The same, through the decoders without a version.
    fn decode_plain_like(&self, bytes: &[u8]) -> Result<Message, WireError> {
        match self {
            Message::Datagram(_) => decode_datagram(bytes).map(Message::Datagram),
            Message::Frame(_) => decode_frame(bytes).map(Message::Frame),
        }
    }
}

fn node(name: &str) -> NodeId {
    NodeId::new(name).unwrap()
}

/// A node's replica in epoch 0 (a directory that predates epochs): all version 2 could name.
fn old(name: &str) -> ReplicaId {
    ReplicaId::new(node(name), 0)
}

fn ts(offset_ms: u64, logical: u16) -> Timestamp {
    Timestamp::new(1_700_000_000_000 + offset_ms, logical)
}

fn member(n: u16, state: MemberState, incarnation: u64) -> Member {
    Member {
        id: node(&format!("n{n}")),
        gossip_addr: format!("127.0.0.1:{}", 7100 + n).parse().unwrap(),
        http_addr: format!("127.0.0.1:{}", 7000 + n).parse().unwrap(),
        state,
        incarnation,
    }
}

fn register() -> LwwRegister {
    LwwRegister::write(
        ts(1_000, 2),
        node("n1"),
        Some(Value {
            content_type: "text/plain".into(),
            data: b"hello".to_vec(),
        }),
    )
}

fn value() -> KeyState {
    KeyState::Register(register())
}

fn tombstone() -> KeyState {
    KeyState::Register(LwwRegister::write(ts(2_000, 0), node("n2"), None))
}

/// A set with a version vector (n1: 2, n2: 1), a cloud dot (n3: 2) and three elements, built by
/// the same operations as in version 2's generator.
fn set_of(n1: &ReplicaId, n2: &ReplicaId, n3: &ReplicaId) -> KeyState {
    let mut set = OrSet::new();
    let _ = set.add(n1, "apple");
    let _ = set.add(n2, "pear");
    let _ = set.add(n1, "plum");
    let _ = set.remove("apple");
    let mut elsewhere = OrSet::new();
    let _ = elsewhere.add(n3, "quince");
    let fig = elsewhere.add(n3, "fig");
    let _ = set.merge(&fig);
    KeyState::Set(set)
}

fn set() -> KeyState {
    set_of(&old("n1"), &old("n2"), &old("n3"))
}

/// The same set with n3 in a storage epoch: no version-2 form.
fn set_with_epoch() -> KeyState {
    set_of(&old("n1"), &old("n2"), &ReplicaId::new(node("n3"), 0x5eed))
}

/// A value written by a writer that held `ts(500, 0)`, expiring after a minute.
fn expiring() -> KeyState {
    KeyState::Register(
        LwwRegister::write(
            ts(3_000, 1),
            node("n2"),
            Some(Value {
                content_type: "application/json".into(),
                data: b"{\"a\":1}".to_vec(),
            }),
        )
        .observing(Some(ts(500, 0)))
        .expiring_after(60_000),
    )
}

/// The value of `register()` with what its writer observed: version 2 drops that.
fn observing() -> KeyState {
    KeyState::Register(register().observing(Some(ts(900, 3))))
}

fn counter() -> KeyState {
    let mut counter = PnCounter::new();
    counter.add(&ReplicaId::new(node("n1"), 0x5eed), 5).unwrap();
    counter.add(&old("n2"), -2).unwrap();
    KeyState::Counter(counter)
}

fn rumor(origin: ReplicaId, seq: u64, key: StoreKey, delta: KeyState) -> Rumor {
    Rumor {
        origin,
        seq,
        key,
        delta,
    }
}

fn value_rumor() -> Rumor {
    rumor(old("n1"), 17, StoreKey::kv("greeting"), value())
}

fn tombstone_rumor() -> Rumor {
    rumor(old("n2"), 6, StoreKey::kv("gone"), tombstone())
}

fn set_rumor() -> Rumor {
    rumor(old("n2"), 5, StoreKey::set("fruit"), set())
}

fn range(origin: ReplicaId, contiguous: u64, above: &[u64]) -> SeenRange {
    SeenRange {
        origin,
        contiguous,
        above: above.to_vec(),
    }
}

fn frame(body: FrameBody) -> Message {
    Message::Frame(Frame {
        from: node("n1"),
        body,
    })
}

fn request(start: Option<SyncStart>, message: SyncMessage) -> Message {
    frame(FrameBody::SyncRequest(SyncRequest { start, message }))
}

fn reply(message: SyncMessage) -> Message {
    frame(FrameBody::SyncReply(Some(SyncAnswer {
        collected_through: ts(250, 0),
        message,
    })))
}

/// The messages every accepted version can carry, as this build holds them: the values
/// `v2/generate.rs.txt` wrote, with replica ids of epoch 0 and the Ack's clock.
fn common_messages() -> Vec<(&'static str, Message)> {
    vec![
        (
            "datagram_ping",
            Message::Datagram(Datagram {
                from: member(1, MemberState::Alive, 3),
                swim: Some(SwimMessage::Ping { probe: 9 }),
                updates: vec![
                    member(2, MemberState::Suspect, 4),
                    member(3, MemberState::Dead, 1),
                ],
                rumors: vec![value_rumor(), set_rumor()],
                pull: Some(SeenSummary {
                    origins: vec![range(old("n1"), 17, &[19, 21]), range(old("n2"), 6, &[])],
                }),
            }),
        ),
        (
            "datagram_ack",
            Message::Datagram(Datagram {
                from: member(2, MemberState::Alive, 4),
                swim: Some(SwimMessage::Ack {
                    probe: 9,
                    clock_ms: ACK_CLOCK_MS,
                }),
                updates: Vec::new(),
                rumors: Vec::new(),
                pull: None,
            }),
        ),
        (
            "datagram_ping_req",
            Message::Datagram(Datagram {
                from: member(1, MemberState::Alive, 3),
                swim: Some(SwimMessage::PingReq {
                    probe: 10,
                    target: node("n3"),
                    target_addr: "127.0.0.1:7103".parse().unwrap(),
                }),
                updates: vec![member(4, MemberState::Left, 7)],
                rumors: vec![tombstone_rumor()],
                pull: None,
            }),
        ),
        (
            "frame_rumors",
            frame(FrameBody::Rumors(vec![
                value_rumor(),
                tombstone_rumor(),
                set_rumor(),
            ])),
        ),
        (
            "frame_sync_root",
            request(
                Some(SyncStart {
                    clock: ts(5_000, 1),
                    stable: vec![(node("n1"), ts(4_000, 0)), (node("n2"), ts(3_500, 7))],
                    collected_through: ts(500, 0),
                }),
                SyncMessage::Root {
                    root: Leaf {
                        hash: [7; 32],
                        count: 42,
                    },
                },
            ),
        ),
        ("frame_sync_in_sync", reply(SyncMessage::InSync)),
        (
            "frame_sync_get_children",
            request(
                None,
                SyncMessage::GetChildren {
                    level: 1,
                    nodes: vec![3, 40_000],
                },
            ),
        ),
        (
            "frame_sync_children",
            reply(SyncMessage::Children {
                hashes: vec![[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 12, 13, 14, 15, 16]],
            }),
        ),
        (
            "frame_sync_repair",
            request(
                None,
                SyncMessage::Repair {
                    leaves: vec![12, 13],
                    after: Some(StoreKey::kv("a")),
                    push: vec![
                        (StoreKey::kv("greeting"), value()),
                        (StoreKey::kv("gone"), tombstone()),
                        (StoreKey::set("fruit"), set()),
                    ],
                    want: vec![StoreKey::kv("wanted"), StoreKey::set("basket")],
                },
            ),
        ),
        (
            "frame_sync_repaired",
            reply(SyncMessage::Repaired {
                keys: vec![
                    LeafKeys {
                        leaf: 12,
                        keys: vec![
                            (StoreKey::kv("greeting"), [0xa0, 1, 2, 3, 4, 5, 6, 7]),
                            (StoreKey::set("fruit"), [0xb0, 1, 2, 3, 4, 5, 6, 7]),
                        ],
                        complete: true,
                    },
                    LeafKeys {
                        leaf: 13,
                        keys: Vec::new(),
                        complete: false,
                    },
                ],
                states: vec![
                    (StoreKey::kv("gone"), tombstone()),
                    (StoreKey::set("fruit"), set()),
                ],
                answered: 2,
            }),
        ),
        ("frame_sync_refused", frame(FrameBody::SyncReply(None))),
        (
            "frame_forget",
            frame(FrameBody::Forget(vec![ForgetValue {
                key: StoreKey::kv("old"),
                timestamp: ts(300, 4),
                node: node("n2"),
            }])),
        ),
    ]
}

/// Messages of version 3 that version 2 has no form for (as a whole: `encode_frame_as` refuses
/// them), beside a datagram of rumors that version 2 carries only in part.
fn version_3_messages() -> Vec<(&'static str, Message)> {
    vec![
        (
            "datagram_rumors_of_version_3",
            Message::Datagram(Datagram {
                from: member(3, MemberState::Alive, 2),
                swim: None,
                updates: Vec::new(),
                rumors: vec![
                    rumor(old("n3"), 1, StoreKey::kv("greeting"), observing()),
                    rumor(old("n2"), 2, StoreKey::kv("session"), expiring()),
                    rumor(old("n1"), 3, StoreKey::counter("visits"), counter()),
                    rumor(old("n2"), 4, StoreKey::set("fruit"), set_with_epoch()),
                    rumor(
                        ReplicaId::new(node("n1"), 0x5eed),
                        1,
                        StoreKey::kv("greeting"),
                        value(),
                    ),
                    value_rumor(),
                ],
                pull: Some(SeenSummary {
                    origins: vec![
                        range(old("n1"), 17, &[]),
                        range(ReplicaId::new(node("n1"), 0x5eed), 1, &[3]),
                        range(old("n2"), 6, &[]),
                    ],
                }),
            }),
        ),
        (
            "frame_replicate",
            frame(FrameBody::Replicate(rumor(
                ReplicaId::new(node("n1"), 0x5eed),
                3,
                StoreKey::counter("visits"),
                counter(),
            ))),
        ),
        (
            "frame_replicated",
            frame(FrameBody::Replicated {
                origin: ReplicaId::new(node("n2"), 77),
                seq: 18,
            }),
        ),
        (
            "frame_read_request",
            frame(FrameBody::ReadRequest {
                request: 5,
                key: StoreKey::kv("greeting"),
            }),
        ),
        (
            "frame_read_reply",
            frame(FrameBody::ReadReply {
                request: 5,
                key: StoreKey::kv("session"),
                state: Some(expiring()),
                collected_through: ts(250, 0),
            }),
        ),
        (
            "frame_read_repair",
            frame(FrameBody::ReadRepair {
                key: StoreKey::set("fruit"),
                state: set_with_epoch(),
            }),
        ),
        (
            "frame_sync_fetch_leaves",
            request(
                None,
                SyncMessage::FetchLeaves {
                    leaves: vec![12, 13],
                    after: Some(StoreKey::kv("a")),
                },
            ),
        ),
        (
            "frame_sync_leaf_states",
            reply(SyncMessage::LeafStates {
                states: PackedStates(vec![
                    (StoreKey::kv("greeting"), value()),
                    (StoreKey::kv("gone"), tombstone()),
                    (StoreKey::kv("session"), expiring()),
                    (StoreKey::set("fruit"), set_with_epoch()),
                    (StoreKey::counter("visits"), counter()),
                ]),
                complete: 1,
            }),
        ),
    ]
}

/// What this build sends in `version`, by fixture name.
fn messages_of(version: u8) -> Vec<(&'static str, Message)> {
    let mut messages = common_messages();
    if version == 3 {
        messages.extend(version_3_messages());
    }
    messages
}

/// What decoding a fixture of `version` gives: version 2 knew no Ack clock.
fn decoded_from(version: u8, message: &Message) -> Message {
    match (version, message) {
        (2, Message::Datagram(d)) => {
            let mut d = d.clone();
            if let Some(SwimMessage::Ack { clock_ms, .. }) = &mut d.swim {
                *clock_ms = 0;
            }
            Message::Datagram(d)
        }
        _ => message.clone(),
    }
}

fn fixture_dir(version: u8) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("tests/fixtures/wire/v{version}"))
}

fn fixture(version: u8, name: &str) -> Vec<u8> {
    let path = fixture_dir(version).join(format!("{name}.bin"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn accepted_versions() -> impl Iterator<Item = u8> {
    OLDEST_VERSION..=VERSION
}

#[test]
fn the_accepted_versions_are_2_and_3_and_each_has_exactly_its_fixtures() {
    assert_eq!((OLDEST_VERSION, VERSION), (2, 3));
    for version in accepted_versions() {
        let on_disk: BTreeSet<String> = std::fs::read_dir(fixture_dir(version))
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".bin"))
            .collect();
        let expected: BTreeSet<String> = messages_of(version)
            .iter()
            .map(|(name, _)| format!("{name}.bin"))
            .collect();
        assert_eq!(on_disk, expected, "fixtures of version {version}");
    }
    assert!(fixture_dir(2).join("generate.rs.txt").exists());
}

#[test]
fn every_fixture_decodes_to_its_value_with_the_version_it_holds() {
    for version in accepted_versions() {
        for (name, message) in messages_of(version) {
            let bytes = fixture(version, name);
            assert_eq!(bytes[0], version, "{name}");
            let expected = decoded_from(version, &message);
            assert_eq!(
                message.decode_like(&bytes),
                Ok((version, expected.clone())),
                "v{version}/{name}"
            );
            assert_eq!(
                message.decode_plain_like(&bytes),
                Ok(expected),
                "v{version}/{name}"
            );
        }
    }
}

#[test]
fn a_version_2_ack_decodes_with_clock_0_and_the_rest_of_its_datagram_as_sent() {
    let (version, datagram) = decode_datagram_versioned(&fixture(2, "datagram_ack")).unwrap();
    assert_eq!(version, 2);
    assert_eq!(
        datagram.swim,
        Some(SwimMessage::Ack {
            probe: 9,
            clock_ms: 0
        })
    );
    assert_eq!(datagram.from, member(2, MemberState::Alive, 4));
    assert!(datagram.updates.is_empty() && datagram.rumors.is_empty() && datagram.pull.is_none());
    let (_, current) = decode_datagram_versioned(&fixture(3, "datagram_ack")).unwrap();
    assert_eq!(
        current.swim,
        Some(SwimMessage::Ack {
            probe: 9,
            clock_ms: ACK_CLOCK_MS
        })
    );
}

#[test]
fn version_2_names_decode_as_replicas_of_epoch_0() {
    let (_, datagram) = decode_datagram_versioned(&fixture(2, "datagram_ping")).unwrap();
    assert_eq!(datagram.rumors[0].origin, old("n1"));
    let pull = datagram.pull.unwrap();
    assert!(pull.origins.iter().all(|r| r.origin.epoch == 0));
    let KeyState::Set(set) = &datagram.rumors[1].delta else {
        panic!("not a set: {:?}", datagram.rumors[1].delta);
    };
    let dots: Vec<_> = set.entries().flat_map(|(_, dots)| dots).collect();
    assert_eq!(dots.len(), 3);
    assert!(dots.iter().all(|d| d.replica.epoch == 0));
    assert!(set.contains("fig") && set.contains("pear") && !set.contains("apple"));
}

#[test]
fn encoding_reproduces_every_fixture_byte_for_byte() {
    for version in accepted_versions() {
        for (name, message) in messages_of(version) {
            let bytes = fixture(version, name);
            assert_eq!(
                message.encode_as(version),
                Ok(bytes.clone()),
                "v{version}/{name}"
            );
            if version == VERSION {
                assert_eq!(message.encode(), bytes, "{name}");
            }
        }
    }
}

#[test]
fn what_version_2_decodes_it_encodes_again_to_the_same_bytes() {
    for (name, message) in messages_of(2) {
        let bytes = fixture(2, name);
        let (_, decoded) = message.decode_like(&bytes).unwrap();
        assert_eq!(decoded.encode_as(2), Ok(bytes), "{name}");
    }
}

#[test]
fn versions_outside_the_accepted_ones_are_refused() {
    for (name, message) in messages_of(VERSION) {
        let bytes = fixture(VERSION, name);
        for version in [0, 1, VERSION + 1, u8::MAX] {
            let mut other = bytes.clone();
            other[0] = version;
            assert_eq!(
                message.decode_like(&other),
                Err(WireError::Version(version)),
                "{name}"
            );
            assert_eq!(
                message.encode_as(version),
                Err(WireError::Version(version)),
                "{name}"
            );
        }
    }
}

#[test]
fn frames_version_2_has_no_form_for_are_refused_with_not_in_version() {
    for (name, message) in version_3_messages() {
        if let Message::Frame(_) = message {
            assert!(
                matches!(
                    message.encode_as(2),
                    Err(WireError::NotInVersion { version: 2, .. })
                ),
                "{name}: {:?}",
                message.encode_as(2)
            );
        }
    }
    // Content version 2 lacks inside frames it has.
    let refused = [
        FrameBody::Forget(vec![ForgetValue {
            key: StoreKey::counter("visits"),
            timestamp: ts(1, 0),
            node: node("n1"),
        }]),
        FrameBody::SyncRequest(SyncRequest {
            start: None,
            message: SyncMessage::Repair {
                leaves: Vec::new(),
                after: None,
                push: vec![(StoreKey::kv("session"), expiring())],
                want: Vec::new(),
            },
        }),
        FrameBody::SyncRequest(SyncRequest {
            start: None,
            message: SyncMessage::Repair {
                leaves: Vec::new(),
                after: None,
                push: Vec::new(),
                want: vec![StoreKey::counter("visits")],
            },
        }),
        FrameBody::SyncReply(Some(SyncAnswer {
            collected_through: ts(1, 0),
            message: SyncMessage::Repaired {
                keys: Vec::new(),
                states: vec![(StoreKey::set("fruit"), set_with_epoch())],
                answered: 1,
            },
        })),
    ];
    for body in refused {
        let message = frame(body);
        assert!(
            matches!(
                message.encode_as(2),
                Err(WireError::NotInVersion { version: 2, .. })
            ),
            "{message:?}"
        );
    }
}

#[test]
fn version_2_gossip_leaves_out_the_rumors_and_pull_ranges_it_cannot_carry() {
    let Message::Datagram(datagram) = &version_3_messages()[0].1 else {
        panic!("not a datagram");
    };
    let (version, sent) =
        decode_datagram_versioned(&encode_datagram_as(datagram, 2).unwrap()).unwrap();
    assert_eq!(version, 2);
    // The first rumor loses what its writer observed; the expiring value, the counter, the set
    // with an epoch and the origin with an epoch have no version-2 form.
    let plain = rumor(old("n3"), 1, StoreKey::kv("greeting"), value());
    assert_eq!(sent.rumors, [plain, value_rumor()]);
    assert_eq!(
        sent.pull.unwrap().origins,
        [range(old("n1"), 17, &[]), range(old("n2"), 6, &[])]
    );
    assert_eq!((&sent.from, &sent.swim), (&datagram.from, &datagram.swim));
    assert!(encode_datagram_as(datagram, 2).unwrap().len() < encode_datagram(datagram).len());

    let rumors = FrameBody::Rumors(datagram.rumors.clone());
    let (_, frame) = decode_frame_versioned(
        &encode_frame_as(
            &Frame {
                from: node("n3"),
                body: rumors,
            },
            2,
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(frame.body, FrameBody::Rumors(sent.rumors));
}

#[test]
fn the_prober_takes_a_clock_sample_from_a_version_3_ack_and_none_from_a_version_2_one() {
    use hearsay::membership::{Membership, MembershipConfig};
    use rand::SeedableRng;
    for version in [2, 3] {
        let mut prober = Membership::new(
            member(1, MemberState::Alive, 0),
            Vec::new(),
            MembershipConfig::lan(),
        );
        let peer = member(2, MemberState::Alive, 0);
        prober.apply_updates(0, std::slice::from_ref(&peer));
        let mut out = Vec::new();
        prober.handle_tick(1_000, &mut rand::rngs::SmallRng::seed_from_u64(1), &mut out);
        let Some(SwimMessage::Ping { probe }) = out.first().map(|o| o.msg.clone()) else {
            panic!("expected a probe, got {out:?}");
        };
        let ack = Datagram {
            from: peer.clone(),
            swim: Some(SwimMessage::Ack {
                probe,
                clock_ms: ACK_CLOCK_MS,
            }),
            updates: Vec::new(),
            rumors: Vec::new(),
            pull: None,
        };
        let received = decode_datagram(&encode_datagram_as(&ack, version).unwrap()).unwrap();
        let swim = received.swim.unwrap();
        prober.handle_message(1_010, &received.from, peer.gossip_addr, swim, &mut out);
        let samples: Vec<_> = prober.clock_samples().map(|(id, _)| id.clone()).collect();
        match version {
            2 => assert_eq!(samples, [], "a version-2 Ack carries no clock"),
            _ => assert_eq!(samples, std::slice::from_ref(&peer.id)),
        }
    }
}

/// Rewrites the fixtures of [`VERSION`] from this build (`HEARSAY_WRITE_FIXTURES=1 cargo test
/// --test wire_versions -- --ignored`). Only for a new version, or a message added to this one:
/// rewriting them to make a changed encoding pass defeats them. Older versions' fixtures come
/// from the builds that spoke them (`v2/generate.rs.txt`).
#[test]
#[ignore]
fn write_current_fixtures() {
    if std::env::var_os("HEARSAY_WRITE_FIXTURES").is_none() {
        eprintln!("set HEARSAY_WRITE_FIXTURES=1 to rewrite the fixtures of version {VERSION}");
        return;
    }
    let dir = fixture_dir(VERSION);
    std::fs::create_dir_all(&dir).unwrap();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "bin") {
            std::fs::remove_file(path).unwrap();
        }
    }
    for (name, message) in messages_of(VERSION) {
        std::fs::write(dir.join(format!("{name}.bin")), message.encode()).unwrap();
    }
}
