//! etcd's Election service (v3electionpb), as Go's
//! `concurrency.Election` does it, run on the node's cores: a candidate
//! is the key `name/<lease in hex>` holding its value; the leader is the
//! key of the prefix with the lowest create revision. Campaign waits to
//! lead (`lock.rs`'s wait), Proclaim and Resign act only while the key is
//! the one that campaigned, Leader reads the leader, and Observe streams
//! each leader and each value it proclaims.

use std::pin::Pin;

use futures_util::Stream;
use keel_engine::mvcc as kv;
use keel_engine::routing::prefix_end;
use keel_engine::shard::{Consistency, NodeClient, NodeResult, WatchBatch};
use keel_etcd_api::v3electionpb as pb;
use keel_etcd_api::v3electionpb::election_server::Election;
use tonic::{Request, Response, Status};

use crate::etcd::convert::{key_value, to_i64};
use crate::etcd::cores::{client, Cores};
use crate::etcd::errors::status;
use crate::etcd::header::Headers;
use crate::etcd::lock::{acquire, delete, for_a_caller, session_expired, Wait};
use crate::etcd::permits::check;

/// Leaders queued for an observer that is slow to read them.
const OBSERVE_QUEUE: usize = 16;

/// The Election service of one node.
#[derive(Clone)]
pub(crate) struct ElectionService {
    pub(crate) auth: crate::auth::Auth,
    pub(crate) cores: Cores,
    pub(crate) headers: Headers,
}

type Leaders = Pin<Box<dyn Stream<Item = Result<pb::LeaderResponse, Status>> + Send + 'static>>;

fn prefix_of(name: &[u8]) -> Vec<u8> {
    [name, b"/"].concat()
}

// etcd's election errors are plain Go errors: gRPC code Unknown.
fn not_leader() -> Status {
    Status::unknown("election: not leader")
}

fn no_leader() -> Status {
    Status::unknown("election: no leader")
}

/// A transaction that acts on `leader`'s key only while it is the one
/// that campaigned (its create revision).
fn while_leading(leader: &pb::LeaderKey, op: kv::RequestOp) -> kv::TxnRequest {
    kv::TxnRequest {
        compare: vec![kv::Compare {
            key: leader.key.clone(),
            range_end: Vec::new(),
            target: kv::CompareTarget::Create(u64::try_from(leader.rev).unwrap_or(0)),
            result: kv::CompareResult::Equal,
        }],
        success: vec![op],
        failure: Vec::new(),
    }
}

/// Campaigns for `prefix` with `key`: answers its create revision once it
/// leads. A candidate again with another value proclaims it first; if
/// its key went meanwhile, it does not lead.
async fn campaign_on_core(
    client: &NodeClient<'_>,
    prefix: &[u8],
    key: &[u8],
    lease: i64,
    value: Vec<u8>,
) -> Result<u64, Status> {
    let held = acquire(client, prefix, key, lease, value.clone())
        .await
        .map_err(|e| status(&e))?;
    let Some((revision, had)) = held else {
        return Err(session_expired());
    };
    if had.is_some_and(|had| had != value) {
        let leader = pb::LeaderKey {
            rev: to_i64(revision),
            key: key.to_vec(),
            ..pb::LeaderKey::default()
        };
        let put = kv::RequestOp::Put(kv::PutRequest {
            key: key.to_vec(),
            value,
            lease,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        });
        let applied = client
            .txn(while_leading(&leader, put))
            .await
            .map_err(|e| status(&e))?;
        if !matches!(
            applied.response,
            kv::Response::Txn(kv::TxnResponse {
                succeeded: true,
                ..
            })
        ) {
            return Err(not_leader());
        }
    }
    Ok(revision)
}

/// The leader of `prefix` now, and the revision it was read at.
async fn leader_of(
    client: &NodeClient<'_>,
    prefix: &[u8],
) -> NodeResult<(u64, Option<kv::KeyValue>)> {
    let first = kv::RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: kv::SortOrder::Ascend,
        sort_target: kv::SortTarget::Create,
        ..kv::RangeRequest::default()
    };
    let (revision, found) = client.range(first, Consistency::Linearizable).await?;
    Ok((revision, found.kvs.into_iter().next()))
}

#[tonic::async_trait]
impl Election for ElectionService {
    async fn campaign(
        &self,
        request: Request<pb::CampaignRequest>,
    ) -> Result<Response<pb::CampaignResponse>, Status> {
        check(&self.auth, &request, |p, r| {
            p.own_prefix(&prefix_of(&r.name))
        })?;
        crate::etcd::permits::check_lease(
            &self.auth,
            &request,
            &self.cores,
            request.get_ref().lease,
        )
        .await?;
        let pb::CampaignRequest { name, lease, value } = request.into_inner();
        let wait: Wait = Box::new(move |client, prefix, key, lease| {
            Box::pin(async move { campaign_on_core(client, &prefix, &key, lease, value).await })
        });
        let (revision, key, lease) =
            for_a_caller(&self.cores, prefix_of(&name), lease, wait).await?;
        Ok(Response::new(pb::CampaignResponse {
            header: Some(self.headers.at(revision)),
            leader: Some(pb::LeaderKey {
                name,
                key,
                rev: to_i64(revision),
                lease,
            }),
        }))
    }

    async fn proclaim(
        &self,
        request: Request<pb::ProclaimRequest>,
    ) -> Result<Response<pb::ProclaimResponse>, Status> {
        check(&self.auth, &request, |p, r| match &r.leader {
            Some(leader) => p.write(&leader.key, &[]),
            None => Ok(()),
        })?;
        let pb::ProclaimRequest { leader, value } = request.into_inner();
        let leader =
            leader.ok_or_else(|| Status::invalid_argument("\"leader\" field must be provided"))?;
        let put = kv::RequestOp::Put(kv::PutRequest {
            key: leader.key.clone(),
            value,
            lease: leader.lease,
            prev_kv: false,
            ignore_value: false,
            ignore_lease: false,
        });
        let txn = while_leading(&leader, put);
        let applied = self
            .cores
            .call(move |node, core| Box::pin(async move { client(&node, core).txn(txn).await }))
            .await?;
        match applied.response {
            kv::Response::Txn(kv::TxnResponse {
                succeeded: true, ..
            }) => Ok(Response::new(pb::ProclaimResponse {
                header: Some(self.headers.at(applied.revision)),
            })),
            _ => Err(not_leader()),
        }
    }

    async fn leader(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<pb::LeaderResponse>, Status> {
        check(&self.auth, &request, |p, r| {
            p.read_prefix(&prefix_of(&r.name))
        })?;
        let prefix = prefix_of(&request.into_inner().name);
        let (revision, leader) = self
            .cores
            .call(move |node, core| {
                Box::pin(async move { leader_of(&client(&node, core), &prefix).await })
            })
            .await?;
        let leader = leader.ok_or_else(no_leader)?;
        Ok(Response::new(pb::LeaderResponse {
            header: Some(self.headers.at(revision)),
            kv: Some(key_value(leader)),
        }))
    }

    type ObserveStream = Leaders;

    async fn observe(
        &self,
        request: Request<pb::LeaderRequest>,
    ) -> Result<Response<Self::ObserveStream>, Status> {
        check(&self.auth, &request, |p, r| {
            p.read_prefix(&prefix_of(&r.name))
        })?;
        let prefix = prefix_of(&request.into_inner().name);
        let (leaders, observed) = tokio::sync::mpsc::channel(OBSERVE_QUEUE);
        let headers = self.headers.clone();
        self.cores.spawn(move |node, core| {
            Box::pin(async move {
                let client = client(&node, core);
                let ended = observe(&client, &prefix, &leaders, &headers).await;
                if let Err(error) = ended {
                    let _ = leaders.send(Err(status(&error))).await;
                }
            })
        })?;
        let stream = futures_util::stream::unfold(observed, |mut observed| async move {
            observed.recv().await.map(|leader| (leader, observed))
        });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn resign(
        &self,
        request: Request<pb::ResignRequest>,
    ) -> Result<Response<pb::ResignResponse>, Status> {
        check(&self.auth, &request, |p, r| match &r.leader {
            Some(leader) => p.write(&leader.key, &[]),
            None => Ok(()),
        })?;
        let leader = request
            .into_inner()
            .leader
            .ok_or_else(|| Status::invalid_argument("\"leader\" field must be provided"))?;
        let txn = while_leading(&leader, kv::RequestOp::DeleteRange(delete(&leader.key)));
        let applied = self
            .cores
            .call(move |node, core| Box::pin(async move { client(&node, core).txn(txn).await }))
            .await?;
        Ok(Response::new(pb::ResignResponse {
            header: Some(self.headers.at(applied.revision)),
        }))
    }
}

/// Sends each leader of `prefix`, and each value it proclaims, until the
/// observer goes away.
async fn observe(
    client: &NodeClient<'_>,
    prefix: &[u8],
    leaders: &tokio::sync::mpsc::Sender<Result<pb::LeaderResponse, Status>>,
    headers: &Headers,
) -> NodeResult<()> {
    loop {
        let (revision, leader) = leader_of(client, prefix).await?;
        let Some(leader) = leader else {
            // No leader: wait for a candidate.
            wait_for_change(client, prefix, &prefix_end(prefix), revision, leaders).await?;
            if leaders.is_closed() {
                return Ok(());
            }
            continue;
        };
        let key = leader.key.clone();
        let mut last = leader.mod_revision;
        let answer = pb::LeaderResponse {
            header: Some(headers.at(revision)),
            kv: Some(key_value(leader)),
        };
        if leaders.send(Ok(answer)).await.is_err() {
            return Ok(());
        }
        // Follow the leader's key: a new value is sent; a delete ends its
        // term.
        let mut watch = client
            .watch(kv::WatchRequest {
                key: key.clone(),
                range_end: Vec::new(),
                start_revision: revision.saturating_add(1),
                prev_kv: false,
                no_put: false,
                no_delete: false,
            })
            .await?;
        'term: loop {
            let batch = futures_lite::future::or(async { Some(watch.next().await) }, async {
                leaders.closed().await;
                None
            })
            .await;
            let Some(batch) = batch else {
                return Ok(());
            };
            match batch? {
                WatchBatch::Events(events) => {
                    for event in events {
                        if event.kind == kv::EventKind::Delete {
                            break 'term;
                        }
                        if event.kv.mod_revision > last {
                            last = event.kv.mod_revision;
                            let answer = pb::LeaderResponse {
                                header: Some(headers.at(event.kv.mod_revision)),
                                kv: Some(key_value(event.kv)),
                            };
                            if leaders.send(Ok(answer)).await.is_err() {
                                return Ok(());
                            }
                        }
                    }
                }
                WatchBatch::Compacted { .. } => break 'term,
                WatchBatch::Progress(_) => {}
            }
        }
    }
}

/// Waits for any event on `[key, range_end)` after `after`, or for the
/// observer to go away.
async fn wait_for_change(
    client: &NodeClient<'_>,
    key: &[u8],
    range_end: &[u8],
    after: u64,
    leaders: &tokio::sync::mpsc::Sender<Result<pb::LeaderResponse, Status>>,
) -> NodeResult<()> {
    let mut watch = client
        .watch(kv::WatchRequest {
            key: key.to_vec(),
            range_end: range_end.to_vec(),
            start_revision: after.saturating_add(1),
            prev_kv: false,
            no_put: false,
            no_delete: false,
        })
        .await?;
    loop {
        let batch = futures_lite::future::or(async { Some(watch.next().await) }, async {
            leaders.closed().await;
            None
        })
        .await;
        match batch {
            None => return Ok(()),
            Some(batch) => match batch? {
                WatchBatch::Events(events) if !events.is_empty() => return Ok(()),
                WatchBatch::Compacted { .. } => return Ok(()),
                _ => {}
            },
        }
    }
}
