//! `GET /v1/cluster/status`: this node asks every alive member for its digest and its health
//! (over the members' HTTP APIs, at once, each within a second) and says whether they all agree.
//! A member that is not alive, or does not answer in time, has no digest and no health, and the
//! cluster is then not converged. Asks only; decides nothing.

use super::error::ApiError;
use super::AppState;
use crate::client::address::Endpoint;
use crate::client::http::{Call, Client};
use crate::membership::{Member, MemberState};
use axum::extract::State;
use axum::Json;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// How long a member has to answer.
const ASK_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Serialize)]
pub struct StatusReply {
    /// Every member is alive, answered, and has the same root.
    converged: bool,
    nodes: Vec<NodeStatus>,
    /// The catch-up after members this node had declared dead came back: in progress, else
    /// the last one since it started (`null`: none).
    heal: Option<Heal>,
}

#[derive(Serialize)]
struct Heal {
    members: Vec<String>,
    started_ms: u64,
    keys_repaired: u64,
    bytes: u64,
    conflicts: u64,
    /// `null` while in progress.
    converged_after_ms: Option<u64>,
}

#[derive(Serialize)]
struct NodeStatus {
    id: String,
    state: String,
    /// `null` when the member is not alive or did not answer.
    root: Option<String>,
    keys: Option<u64>,
    /// The member's own `/v1/health`: `ok` or `degraded` (`null` as for `root`).
    health: Option<String>,
    /// Why it is degraded (`null` as for `root`).
    reasons: Option<Vec<String>>,
}

/// What a member says of itself.
struct Answer {
    digest: Digest,
    health: Health,
}

#[derive(Deserialize)]
struct Digest {
    root: String,
    keys: u64,
}

#[derive(Deserialize)]
struct Health {
    status: String,
    reasons: Vec<String>,
}

pub async fn status(State(state): State<AppState>) -> Result<Json<StatusReply>, ApiError> {
    let mut members = state.node.members().await?;
    members.sort_by(|a, b| a.id.cmp(&b.id));
    let me = state.node.id().clone();
    let own = state.node.digest().await?;
    let (own_reasons, _) = state.node.health_reasons();
    let own_health = super::cluster::health_status(&own_reasons);
    let token = state.settings.api_token.0.clone();
    let mut asks = tokio::task::JoinSet::new();
    for (i, member) in members.iter().enumerate() {
        if member.id == me || member.state != MemberState::Alive {
            continue;
        }
        let (member, token) = (member.clone(), token.clone());
        asks.spawn(async move { (i, ask(&member, token.as_deref()).await) });
    }
    let mut nodes: Vec<NodeStatus> = members
        .iter()
        .map(|m| {
            let mine = m.id == me;
            NodeStatus {
                id: m.id.to_string(),
                state: m.state.to_string(),
                root: mine.then(|| own.hex()),
                keys: mine.then_some(own.count),
                health: mine.then(|| own_health.to_string()),
                reasons: mine.then(|| own_reasons.iter().map(|r| r.to_string()).collect()),
            }
        })
        .collect();
    while let Some(answer) = asks.join_next().await {
        if let Ok((i, Some(answer))) = answer {
            nodes[i].root = Some(answer.digest.root);
            nodes[i].keys = Some(answer.digest.keys);
            nodes[i].health = Some(answer.health.status);
            nodes[i].reasons = Some(answer.health.reasons);
        }
    }
    let first = nodes.first().and_then(|n| n.root.clone());
    let converged = first.is_some() && nodes.iter().all(|n| n.root == first);
    let heal = state.node.stats().await?.heal.map(|h| Heal {
        members: h.peers.iter().map(|p| p.to_string()).collect(),
        started_ms: h.started_ms,
        keys_repaired: h.keys_repaired,
        bytes: h.bytes,
        conflicts: h.conflicts,
        converged_after_ms: h.converged_after_ms,
    });
    Ok(Json(StatusReply {
        converged,
        nodes,
        heal,
    }))
}

/// A client of `member`'s HTTP API (at its advertised address) with this node's token.
pub(super) fn member_client(
    member: &Member,
    token: Option<&str>,
    timeout: Duration,
) -> Option<Client> {
    let endpoint = Endpoint::parse(&format!("http://{}", member.http_addr)).ok()?;
    Client::new(endpoint, token, timeout).ok()
}

/// `member`'s digest and health, or `None` when it does not give both in time or answers
/// something else.
async fn ask(member: &Member, token: Option<&str>) -> Option<Answer> {
    let mut client = member_client(member, token, ASK_TIMEOUT)?;
    let get = |target| Call {
        method: hyper::Method::GET,
        target,
        body: None,
    };
    let answer = async {
        let digest = client.call_json::<Digest>(get("/v1/cluster/digest")).await;
        let health = client.call_json::<Health>(get("/v1/health")).await;
        match (digest, health) {
            (Ok(digest), Ok(health)) => Some(Answer { digest, health }),
            (Err(e), _) | (_, Err(e)) => {
                tracing::debug!(member = %member.id, error = %e, "no digest or health from a member");
                None
            }
        }
    };
    // Each call has the timeout; so have both together.
    tokio::time::timeout(ASK_TIMEOUT, answer)
        .await
        .ok()
        .flatten()
}
