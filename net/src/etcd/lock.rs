//! etcd's Lock service (v3lockpb), as clients without a mutex of their own
//! call it: the same algorithm as Go's `concurrency.Mutex`, run on one of
//! the node's cores.
//!
//! A lock `name` held under lease `L` is the key `name/<L in hex>`, put
//! with the lease if it is new. Its holder is the key of the prefix with
//! the lowest create revision: a caller waits until every key created
//! before its own is deleted (each watched from the revision it was read
//! at). A caller that goes away while it waits deletes its key, as Go's
//! mutex does; the lease bounds it anyway.

use keel_engine::mvcc as kv;
use keel_engine::routing::prefix_end;
use keel_engine::shard::{Consistency, NodeClient, NodeError, NodeResult, WatchBatch};
use keel_etcd_api::v3lockpb as pb;
use keel_etcd_api::v3lockpb::lock_server::Lock;
use tonic::{Request, Response, Status};

use crate::etcd::cores::{client, Cores};
use crate::etcd::errors::status;
use crate::etcd::header::Headers;
use crate::etcd::permits::check;

/// The Lock service of one node.
#[derive(Clone)]
pub(crate) struct LockService {
    pub(crate) auth: crate::auth::Auth,
    pub(crate) cores: Cores,
    pub(crate) headers: Headers,
}

#[tonic::async_trait]
impl Lock for LockService {
    async fn lock(
        &self,
        request: Request<pb::LockRequest>,
    ) -> Result<Response<pb::LockResponse>, Status> {
        // A lock's keys are under `name/`: its holder writes and reads them.
        check(&self.auth, &request, |p, r| {
            p.own_prefix(&[r.name.as_slice(), b"/"].concat())
        })?;
        crate::etcd::permits::check_lease(
            &self.auth,
            &request,
            &self.cores,
            request.get_ref().lease,
        )
        .await?;
        let pb::LockRequest { name, lease } = request.into_inner();
        let prefix = [name.as_slice(), b"/"].concat();
        let wait: Wait = Box::new(|client, prefix, key, lease| {
            Box::pin(async move {
                match acquire(client, &prefix, &key, lease, Vec::new()).await {
                    Ok(Some((revision, _))) => Ok(revision),
                    Ok(None) => Err(session_expired()),
                    Err(error) => Err(status(&error)),
                }
            })
        });
        let (revision, key, _) = for_a_caller(&self.cores, prefix, lease, wait).await?;
        Ok(Response::new(pb::LockResponse {
            header: Some(self.headers.at(revision)),
            key,
        }))
    }

    async fn unlock(
        &self,
        request: Request<pb::UnlockRequest>,
    ) -> Result<Response<pb::UnlockResponse>, Status> {
        check(&self.auth, &request, |p, r| p.write(&r.key, &[]))?;
        let key = request.into_inner().key;
        let applied = self
            .cores
            .call(move |node, core| {
                Box::pin(async move { client(&node, core).delete_range(delete(&key)).await })
            })
            .await?;
        Ok(Response::new(pb::UnlockResponse {
            header: Some(self.headers.at(applied.revision)),
        }))
    }
}

pub(crate) fn delete(key: &[u8]) -> kv::DeleteRangeRequest {
    kv::DeleteRangeRequest {
        key: key.to_vec(),
        range_end: Vec::new(),
        prev_kv: false,
    }
}

/// What a caller's wait does on its core with the node's client, its
/// prefix, its key and its lease: answers the key's create revision.
pub(crate) type Wait = Box<
    dyn for<'a> FnOnce(
            &'a NodeClient<'a>,
            Vec<u8>,
            Vec<u8>,
            i64,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<u64, Status>> + 'a>,
        > + Send,
>;

/// Runs `wait` for a caller of Lock or Campaign on one of the node's
/// cores, under its session lease (`session_lease`) and key
/// `prefix<lease in hex>`; answers the revision, the key and the lease.
/// A caller that goes away while it waits has its key deleted, as Go's
/// mutex and election do.
pub(crate) async fn for_a_caller(
    cores: &Cores,
    prefix: Vec<u8>,
    lease: i64,
    wait: Wait,
) -> Result<(u64, Vec<u8>, i64), Status> {
    let (answer, answered) = tokio::sync::oneshot::channel();
    cores.spawn(move |node, core| {
        Box::pin(async move {
            let client = client(&node, core);
            let mut answer = answer;
            let lease = match session_lease(&client, lease).await {
                Ok(lease) => lease,
                Err(error) => {
                    let _ = answer.send(Err(status(&error)));
                    return;
                }
            };
            let key = [prefix.clone(), format!("{lease:x}").into_bytes()].concat();
            let waited = futures_lite::future::or(
                async { Some(wait(&client, prefix, key.clone(), lease).await) },
                async {
                    answer.closed().await;
                    None
                },
            )
            .await;
            match waited {
                Some(outcome) => {
                    let _ = answer.send(outcome.map(|revision| (revision, key, lease)));
                }
                // The caller went away: its key goes too.
                None => {
                    let _ = client.delete_range(delete(&key)).await;
                }
            }
        })
    })?;
    answered
        .await
        .map_err(|_| Status::unavailable("etcdserver: server stopped"))?
}

/// etcd's error for a waiter whose key went (its lease expired).
pub(crate) fn session_expired() -> Status {
    Status::unknown("mutex: session is expired")
}

/// The lease a lock or a campaign is held under: the caller's, or, for 0,
/// a new one of 60 s, as etcd's session makes for it.
pub(crate) async fn session_lease(client: &NodeClient<'_>, lease: i64) -> NodeResult<i64> {
    if lease != 0 {
        return Ok(lease);
    }
    client.lease_grant(0, SESSION_TTL).await
}

/// The time to live of a lease made for a caller that names none (etcd's
/// session default).
const SESSION_TTL: i64 = 60;

/// Takes the lock of `prefix` for the key `mine` (put with `lease` and
/// `value` if new); answers, once it is held, the key's create revision
/// and the value it already had if it was not new; `None` when the key
/// went while it waited (its lease expired): it holds nothing then.
pub(crate) async fn acquire(
    client: &NodeClient<'_>,
    prefix: &[u8],
    mine: &[u8],
    lease: i64,
    value: Vec<u8>,
) -> NodeResult<Option<(u64, Option<Vec<u8>>)>> {
    let first_holder = kv::RequestOp::Range(kv::RangeRequest {
        key: prefix.to_vec(),
        range_end: prefix_end(prefix),
        limit: 1,
        sort_order: kv::SortOrder::Ascend,
        sort_target: kv::SortTarget::Create,
        ..kv::RangeRequest::default()
    });
    let txn = kv::TxnRequest {
        compare: vec![kv::Compare {
            key: mine.to_vec(),
            range_end: Vec::new(),
            target: kv::CompareTarget::Create(0),
            result: kv::CompareResult::Equal,
        }],
        success: vec![
            kv::RequestOp::Put(kv::PutRequest {
                key: mine.to_vec(),
                value,
                lease,
                prev_kv: false,
                ignore_value: false,
                ignore_lease: false,
            }),
            first_holder.clone(),
        ],
        failure: vec![
            kv::RequestOp::Range(kv::RangeRequest {
                key: mine.to_vec(),
                ..kv::RangeRequest::default()
            }),
            first_holder,
        ],
    };
    let applied = client.txn(txn).await?;
    let kv::Response::Txn(answer) = applied.response else {
        return Err(NodeError::InvalidRequest("a txn answered otherwise".into()));
    };
    let ranges: Vec<&kv::RangeResponse> = answer
        .responses
        .iter()
        .filter_map(|op| match op {
            kv::ResponseOp::Range(r) => Some(r),
            _ => None,
        })
        .collect();
    let existing = (!answer.succeeded)
        .then(|| ranges.first().and_then(|r| r.kvs.first()))
        .flatten();
    let my_revision = existing.map_or(applied.revision, |kv| kv.create_revision);
    let existing_value = existing.map(|kv| kv.value.clone());
    let holder = ranges.last().and_then(|r| r.kvs.first());
    if holder.is_some_and(|h| h.create_revision != my_revision) {
        wait_deletes(client, prefix, my_revision.saturating_sub(1)).await?;
        // Still there? A key deleted while it waited (its lease expired)
        // holds nothing, and a later one may think it holds the lock.
        let own = kv::RangeRequest {
            key: mine.to_vec(),
            ..kv::RangeRequest::default()
        };
        let (_, found) = client.range(own, Consistency::Linearizable).await?;
        if found.kvs.first().map(|kv| kv.create_revision) != Some(my_revision) {
            return Ok(None);
        }
    }
    Ok(Some((my_revision, existing_value)))
}

/// Waits until no key of `prefix` created at or below `max_create` is left.
async fn wait_deletes(client: &NodeClient<'_>, prefix: &[u8], max_create: u64) -> NodeResult<()> {
    loop {
        let last = kv::RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            limit: 1,
            sort_order: kv::SortOrder::Descend,
            sort_target: kv::SortTarget::Create,
            max_create_revision: max_create,
            ..kv::RangeRequest::default()
        };
        let (read_at, found) = client.range(last, Consistency::Linearizable).await?;
        let Some(waiting_on) = found.kvs.first() else {
            return Ok(());
        };
        wait_delete(client, &waiting_on.key, read_at).await?;
    }
}

/// Waits for `key` to be deleted after revision `after`.
async fn wait_delete(client: &NodeClient<'_>, key: &[u8], after: u64) -> NodeResult<()> {
    let mut watch = client
        .watch(kv::WatchRequest {
            key: key.to_vec(),
            range_end: Vec::new(),
            start_revision: after.saturating_add(1),
            prev_kv: false,
            no_put: true,
            no_delete: false,
        })
        .await?;
    loop {
        match watch.next().await? {
            WatchBatch::Events(events) if !events.is_empty() => return Ok(()),
            WatchBatch::Compacted { .. } => return Ok(()),
            _ => {}
        }
    }
}
