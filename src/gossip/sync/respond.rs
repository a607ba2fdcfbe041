//! The responder's side of an exchange: stateless, one bounded reply per request.

use super::packed::PackedSize;
use super::*;

/// The responder's side: stateless, one reply per request (every request carries what the
/// responder needs). Returns the reply, `None` for a malformed or out-of-range request (and for
/// replies sent as requests), and the pushed states to merge locally.
pub fn respond(
    source: &impl SyncSource,
    request: SyncMessage,
) -> (Option<SyncMessage>, Vec<(StoreKey, KeyState)>) {
    respond_within(source, request, MESSAGE_BUDGET)
}

pub(super) fn respond_within(
    source: &impl SyncSource,
    request: SyncMessage,
    budget: usize,
) -> (Option<SyncMessage>, Vec<(StoreKey, KeyState)>) {
    match request {
        SyncMessage::Root { root } => {
            let merkle = source.merkle();
            let reply = if merkle.root() == root {
                SyncMessage::InSync
            } else {
                SyncMessage::Children {
                    hashes: prefixes(merkle.children(0, 0)),
                }
            };
            (Some(reply), Vec::new())
        }
        SyncMessage::GetChildren { level, nodes } => {
            (children_of(source.merkle(), level, &nodes), Vec::new())
        }
        SyncMessage::Repair {
            leaves,
            after,
            push,
            want,
        } => {
            let acceptable = leaves.len() <= MAX_LEAVES_PER_REQUEST
                && push.len() <= MAX_KEYS_PER_REQUEST
                && want.len() <= MAX_KEYS_PER_REQUEST
                && push.iter().all(|(key, state)| kind_matches(key, state));
            if !acceptable {
                return (None, Vec::new());
            }
            let reply = repaired(source, &leaves, after.as_ref(), &want, budget);
            (Some(reply), push)
        }
        SyncMessage::FetchLeaves { leaves, after } => {
            if leaves.is_empty() || leaves.len() > MAX_LEAVES_PER_REQUEST {
                return (None, Vec::new());
            }
            (
                Some(leaf_states(source, &leaves, after.as_ref(), budget)),
                Vec::new(),
            )
        }
        SyncMessage::InSync
        | SyncMessage::Children { .. }
        | SyncMessage::Repaired { .. }
        | SyncMessage::LeafStates { .. } => (None, Vec::new()),
    }
}

fn children_of(merkle: &MerkleIndex, level: u8, nodes: &[u16]) -> Option<SyncMessage> {
    let level = usize::from(level);
    if level >= DEPTH || nodes.is_empty() || nodes.len() > MAX_NODES_PER_REQUEST {
        return None;
    }
    let width = FANOUT.pow(level as u32);
    if nodes.iter().any(|&node| usize::from(node) >= width) {
        return None;
    }
    let hashes = nodes
        .iter()
        .flat_map(|&node| prefixes(merkle.children(level, usize::from(node))))
        .collect();
    Some(SyncMessage::Children { hashes })
}

/// Answers wanted keys first, then fills what is left of the budget with key lists. Always
/// answers at least one wanted key or one key (or complete leaf), so every round makes progress.
fn repaired(
    source: &impl SyncSource,
    leaves: &[u16],
    after: Option<&StoreKey>,
    want: &[StoreKey],
    budget: usize,
) -> SyncMessage {
    let mut size = RESERVE;
    let mut states = Vec::new();
    let mut answered = 0;
    for key in want {
        if let Some(state) = source.state(key) {
            let len = encoded_len(&(key, &state));
            if size + len > budget && answered > 0 {
                break;
            }
            size += len;
            states.push((key.clone(), state));
        }
        answered += 1;
    }

    let mut progress = answered > 0;
    let mut keys = Vec::new();
    'leaves: for (i, &leaf) in leaves.iter().enumerate() {
        size += LEAF_OVERHEAD;
        if size > budget && progress {
            break;
        }
        let mut list = source.leaf_keys(leaf);
        list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let resume = if i == 0 { after } else { None };
        let mut entry = LeafKeys {
            leaf,
            keys: Vec::new(),
            complete: true,
        };
        for (key, hash) in list {
            if resume.is_some_and(|after| key <= *after) {
                continue;
            }
            let len = encoded_len(&key) + hash.len();
            if size + len > budget && progress {
                if !entry.keys.is_empty() {
                    entry.complete = false;
                    keys.push(entry);
                }
                break 'leaves;
            }
            size += len;
            entry.keys.push((key, hash));
            progress = true;
        }
        keys.push(entry);
        progress = true;
    }
    SyncMessage::Repaired {
        keys,
        states,
        answered: answered as u32,
    }
}

/// Every state of `leaves` in order (the first resumed after `after`), up to the budget; always
/// at least one state or one whole leaf, so every round makes progress.
fn leaf_states(
    source: &impl SyncSource,
    leaves: &[u16],
    after: Option<&StoreKey>,
    budget: usize,
) -> SyncMessage {
    let mut size = RESERVE;
    let mut sizes = PackedSize::default();
    let mut states = Vec::new();
    let mut complete = 0;
    'leaves: for (i, &leaf) in leaves.iter().enumerate() {
        let mut list = source.leaf_keys(leaf);
        list.sort_unstable_by(|a, b| a.0.cmp(&b.0));
        let resume = if i == 0 { after } else { None };
        for (key, _) in list {
            if resume.is_some_and(|after| key <= *after) {
                continue;
            }
            let Some(state) = source.state(&key) else {
                continue;
            };
            let len = sizes.add(&key, &state);
            if size + len > budget && (complete > 0 || !states.is_empty()) {
                break 'leaves;
            }
            size += len;
            states.push((key, state));
        }
        complete += 1;
    }
    SyncMessage::LeafStates {
        states: PackedStates(states),
        complete: complete as u32,
    }
}
