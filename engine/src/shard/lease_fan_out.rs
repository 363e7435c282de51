//! The home shard of a lease telling the other shards: once a grant, a
//! revoke or an expiry has applied on the home, a task on the home's core
//! carries it to every mirror and only then answers the writer. The fan-out
//! no longer depends on the caller staying around; a crash in the middle is
//! finished by `repair_leases` at the next start.

use std::rc::Rc;

use crate::mvcc::{Applied, Entry, KvError, LeaseId};
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::replica::{Reply, ShardCall};
use crate::shard::router::CoreRouter;

/// What the mirrors must do.
#[derive(Debug, Clone)]
pub(crate) enum FanOut {
    /// Copy a granted lease.
    Grant { id: LeaseId, ttl: i64 },
    /// Drop the copies of leases that are gone, with their keys.
    Expire { ids: Vec<LeaseId> },
}

/// Carries `fan_out` to `mirrors`, then answers `writer` with `result`, or
/// with the first mirror's failure.
pub(crate) fn spawn(
    router: Rc<CoreRouter>,
    mirrors: Vec<usize>,
    fan_out: FanOut,
    writer: Option<Reply<Applied>>,
    result: Result<Applied, KvError>,
) {
    glommio::spawn_local(async move {
        let mut failure = None;
        for shard in mirrors {
            let outcome = match &fan_out {
                FanOut::Grant { id, ttl } => grant(&router, shard, *id, *ttl).await,
                FanOut::Expire { ids } => {
                    write(&router, shard, Entry::LeaseExpire { ids: ids.clone() }).await
                }
            };
            if let Err(e) = outcome {
                failure.get_or_insert(e);
            }
        }
        if let Some(writer) = writer {
            let answer = match failure {
                Some(e) => Err(e),
                None => result.map_err(NodeError::from),
            };
            let _ = writer.send(answer);
        }
    })
    .detach();
}

async fn write(router: &CoreRouter, shard: usize, entry: Entry) -> NodeResult<()> {
    router
        .call(shard, |reply| ShardCall::Write { entry, reply })
        .await
        .map(drop)
}

/// Grants a mirror; a stale mirror of an earlier lease with the same id
/// (whose revoke never reached this shard) goes first, with its keys.
async fn grant(router: &CoreRouter, shard: usize, id: LeaseId, ttl: i64) -> NodeResult<()> {
    match write(router, shard, Entry::LeaseGrant { id, ttl }).await {
        Err(NodeError::Kv(KvError::LeaseExists(_))) => {
            write(router, shard, Entry::LeaseExpire { ids: vec![id] }).await?;
            write(router, shard, Entry::LeaseGrant { id, ttl }).await
        }
        other => other,
    }
}
