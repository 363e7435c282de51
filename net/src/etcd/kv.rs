//! etcd's KV service on the node: Range, Put, DeleteRange, Txn, Compact.

use std::sync::Arc;

use keel_engine::mvcc::KvError;
use keel_engine::shard::{Consistency, Node, NodeError};
use keel_etcd_api::etcdserverpb as pb;
use keel_etcd_api::etcdserverpb::kv_server::Kv;
use tonic::{Request, Response, Status};

use crate::etcd::answer_room::{AnswerRooms, ConnectionRoom};
use crate::etcd::convert;
use crate::etcd::cores::{client, Cores, OnCore};
use crate::etcd::errors::status;
use crate::etcd::header::Headers;
use crate::etcd::identity::admit;
use crate::etcd::permits::Permits;

/// A range's answer and the revision it was read at.
type RangeAnswer = (
    keel_engine::mvcc::Revision,
    keel_engine::mvcc::RangeResponse,
);

impl KvService {
    /// Runs `request` on its shard's core (one over several shards takes
    /// the cores in turn: its fan-out and merge run there); `None` when
    /// its answer is past its `answer_limit`.
    async fn run_range(
        &self,
        request: keel_engine::mvcc::RangeRequest,
        consistency: Consistency,
    ) -> Result<Option<RangeAnswer>, Status> {
        let one_shard = self.cores.shard_of_range(&request.key, &request.range_end);
        let read = move |node: Arc<Node>, core| -> OnCore<_> {
            Box::pin(async move {
                match client(&node, core).range(request, consistency).await {
                    Err(NodeError::Kv(KvError::AnswerTooLarge { .. })) => Ok(None),
                    other => other.map(Some),
                }
            })
        };
        match one_shard {
            Some(shard) => self.cores.call_for_shard(shard, read).await,
            None => self.cores.call(read).await,
        }
    }
}

/// The KV service of one node.
#[derive(Clone)]
pub(crate) struct KvService {
    pub(crate) cores: Cores,
    pub(crate) headers: Headers,
    pub(crate) rooms: AnswerRooms,
    pub(crate) auth: crate::auth::Auth,
}

#[tonic::async_trait]
impl Kv for KvService {
    async fn range(
        &self,
        request: Request<pb::RangeRequest>,
    ) -> Result<Response<pb::RangeResponse>, Status> {
        let (compiled, caller) = admit(&self.auth, &request)?;
        Permits {
            compiled: &compiled,
            caller: &caller,
        }
        .range(request.get_ref())?;
        let connection = request.extensions().get::<Arc<ConnectionRoom>>().cloned();
        let request = request.into_inner();
        let consistency = if request.serializable {
            Consistency::Serializable
        } else {
            Consistency::Linearizable
        };
        let mut request = convert::range_request(request)?;
        // First as a small answer, which takes no room; then, if it is
        // larger, in the room of the largest (answer_room.rs).
        request.answer_limit = self.rooms.small();
        if let Some((revision, answer)) = self.run_range(request.clone(), consistency).await? {
            let header = self.headers.at(revision);
            return Ok(Response::new(convert::range_response(Some(header), answer)));
        }
        let room = self.rooms.reserve(connection).await?;
        request.answer_limit = self.rooms.largest();
        let Some((revision, answer)) = self.run_range(request, consistency).await? else {
            return Err(status(&NodeError::Kv(KvError::AnswerTooLarge {
                limit: self.rooms.largest(),
            })));
        };
        let header = self.headers.at(revision);
        let mut response = Response::new(convert::range_response(Some(header), answer));
        response.extensions_mut().insert(room);
        Ok(response)
    }

    async fn put(
        &self,
        request: Request<pb::PutRequest>,
    ) -> Result<Response<pb::PutResponse>, Status> {
        let (compiled, caller) = admit(&self.auth, &request)?;
        let permits = Permits {
            compiled: &compiled,
            caller: &caller,
        };
        permits.put(request.get_ref())?;
        permits
            .lease_keys(&self.cores, request.get_ref().lease)
            .await?;
        let request = convert::put_request(request.into_inner());
        let key = request.key.clone();
        let applied = self
            .cores
            .call_for_key(&key, move |node, core| {
                Box::pin(async move { client(&node, core).put(request).await })
            })
            .await?;
        let header = Some(self.headers.at(applied.revision));
        match applied.response {
            keel_engine::mvcc::Response::Put(put) => {
                Ok(Response::new(convert::put_response(header, put)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn delete_range(
        &self,
        request: Request<pb::DeleteRangeRequest>,
    ) -> Result<Response<pb::DeleteRangeResponse>, Status> {
        let (compiled, caller) = admit(&self.auth, &request)?;
        Permits {
            compiled: &compiled,
            caller: &caller,
        }
        .delete(request.get_ref())?;
        let request = convert::delete_request(request.into_inner());
        let one_shard = self.cores.shard_of_range(&request.key, &request.range_end);
        let delete = move |node: Arc<Node>, core| -> OnCore<_> {
            Box::pin(async move { client(&node, core).delete_range(request).await })
        };
        let applied = match one_shard {
            Some(shard) => self.cores.call_for_shard(shard, delete).await?,
            None => self.cores.call(delete).await?,
        };
        let header = Some(self.headers.at(applied.revision));
        match applied.response {
            keel_engine::mvcc::Response::DeleteRange(deleted) => {
                Ok(Response::new(convert::delete_response(header, deleted)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn txn(
        &self,
        request: Request<pb::TxnRequest>,
    ) -> Result<Response<pb::TxnResponse>, Status> {
        let (compiled, caller) = admit(&self.auth, &request)?;
        let permits = Permits {
            compiled: &compiled,
            caller: &caller,
        };
        for lease in permits.txn(request.get_ref())? {
            permits.lease_keys(&self.cores, lease).await?;
        }
        let request = convert::txn_request(request.into_inner())?;
        // Its compares and writes share a shard: the first compare's key
        // (or the first operation's) names it.
        let key = first_key(&request);
        let applied = self
            .cores
            .call_for_key(&key, move |node, core| {
                Box::pin(async move { client(&node, core).txn(request).await })
            })
            .await?;
        let header = self.headers.at(applied.revision);
        match applied.response {
            keel_engine::mvcc::Response::Txn(txn) => {
                Ok(Response::new(convert::txn_response(&header, txn)))
            }
            other => Err(unexpected(&other)),
        }
    }

    async fn compact(
        &self,
        request: Request<pb::CompactionRequest>,
    ) -> Result<Response<pb::CompactionResponse>, Status> {
        let (compiled, caller) = admit(&self.auth, &request)?;
        Permits {
            compiled: &compiled,
            caller: &caller,
        }
        .administer()?;
        let revision = u64::try_from(request.into_inner().revision)
            .map_err(|_| Status::invalid_argument("etcdserver: revision is negative"))?;
        let applied = self
            .cores
            .call(move |node, core| {
                Box::pin(async move { client(&node, core).compact(revision).await })
            })
            .await?;
        Ok(Response::new(pb::CompactionResponse {
            header: Some(self.headers.at(applied.revision)),
        }))
    }
}

fn unexpected(answer: &keel_engine::mvcc::Response) -> Status {
    Status::internal(format!("etcdserver: unexpected answer {answer:?}"))
}

/// The key that names a transaction's core: its first compare's, or its
/// first operation's; empty (any core) for an empty transaction.
fn first_key(request: &keel_engine::mvcc::TxnRequest) -> Vec<u8> {
    use keel_engine::mvcc::RequestOp;
    let op_key = |op: &RequestOp| match op {
        RequestOp::Range(range) => range.key.clone(),
        RequestOp::Put(put) => put.key.clone(),
        RequestOp::DeleteRange(delete) => delete.key.clone(),
        RequestOp::Txn(txn) => first_key(txn),
    };
    request
        .compare
        .first()
        .map(|compare| compare.key.clone())
        .or_else(|| request.success.first().map(op_key))
        .or_else(|| request.failure.first().map(op_key))
        .unwrap_or_default()
}
