//! etcd's Lease service on the node: grant, revoke, the keep-alive stream,
//! time to live, and the list.

use std::pin::Pin;

use futures_util::{Stream, StreamExt};
use keel_etcd_api::etcdserverpb as pb;
use keel_etcd_api::etcdserverpb::lease_server::Lease;
use tonic::{Request, Response, Status, Streaming};

use crate::etcd::cores::{client, Cores};
use crate::etcd::header::Headers;
use crate::etcd::identity::{admit, Identity, IdentityOf};
use crate::etcd::permits::Permits;
use crate::etcd::Asks;

/// Keep-alive answers waiting for a client that is slow to read them, per
/// stream: past them the stream waits (memory stays bounded).
const KEEP_ALIVE_QUEUE: usize = 16;

/// The Lease service of one node.
#[derive(Clone)]
pub(crate) struct LeaseService {
    pub(crate) cores: Cores,
    pub(crate) headers: Headers,
    pub(crate) auth: crate::auth::Auth,
}

/// The shortest TTL granted, as etcd's with its default election timeout
/// (1.5 election timeouts, rounded up to a second): a grant asking for
/// less gets this.
const MIN_LEASE_TTL: i64 = 2;

pub(crate) type KeepAliveAnswers =
    Pin<Box<dyn Stream<Item = Result<pb::LeaseKeepAliveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl Lease for LeaseService {
    async fn lease_grant(
        &self,
        request: Request<pb::LeaseGrantRequest>,
    ) -> Result<Response<pb::LeaseGrantResponse>, Status> {
        // Any user may grant (etcd 3.6 asks for one).
        admit(&self.auth, &request)?;
        let pb::LeaseGrantRequest { ttl, id } = request.into_inner();
        if ttl > keel_engine::mvcc::MAX_LEASE_TTL {
            return Err(Status::out_of_range("etcdserver: too large lease TTL"));
        }
        // etcd grants its minimum to a shorter TTL (0 and below included).
        let ttl = ttl.max(MIN_LEASE_TTL);
        let id = self
            .cores
            .call(move |node, core| {
                Box::pin(async move { client(&node, core).lease_grant(id, ttl).await })
            })
            .await?;
        Ok(Response::new(pb::LeaseGrantResponse {
            header: Some(self.headers.member()),
            id,
            ttl,
            error: String::new(),
        }))
    }

    async fn lease_revoke(
        &self,
        request: Request<pb::LeaseRevokeRequest>,
    ) -> Result<Response<pb::LeaseRevokeResponse>, Status> {
        // Revoking deletes every attached key: the caller must be allowed
        // to write each one.
        let (compiled, caller) = admit(&self.auth, &request)?;
        let id = request.get_ref().id;
        Permits {
            compiled: &compiled,
            caller: &caller,
        }
        .lease_keys(&self.cores, id)
        .await?;
        let id = request.into_inner().id;
        self.cores
            .call(move |node, core| {
                Box::pin(async move { client(&node, core).lease_revoke(id).await })
            })
            .await?;
        Ok(Response::new(pb::LeaseRevokeResponse {
            header: Some(self.headers.member()),
        }))
    }

    type LeaseKeepAliveStream = KeepAliveAnswers;

    async fn lease_keep_alive(
        &self,
        request: Request<Streaming<pb::LeaseKeepAliveRequest>>,
    ) -> Result<Response<Self::LeaseKeepAliveStream>, Status> {
        let identity = Identity::of(&request);
        Ok(Response::new(
            self.keep_alive(request.into_inner(), identity),
        ))
    }

    async fn lease_time_to_live(
        &self,
        request: Request<pb::LeaseTimeToLiveRequest>,
    ) -> Result<Response<pb::LeaseTimeToLiveResponse>, Status> {
        let (compiled, caller) = admit(&self.auth, &request)?;
        let pb::LeaseTimeToLiveRequest { id, keys } = request.into_inner();
        let status = self
            .cores
            .call(move |node, core| {
                Box::pin(async move { client(&node, core).lease_time_to_live(id, keys).await })
            })
            .await?;
        // Its keys only to a caller who may read every one (etcd's
        // CVE-2023-32082).
        if let Some(status) = &status {
            let permits = Permits {
                compiled: &compiled,
                caller: &caller,
            };
            for key in &status.keys {
                permits.read(key, &[])?;
            }
        }
        // A lease that is gone has a time to live of -1, as etcd answers.
        Ok(Response::new(match status {
            Some(status) => pb::LeaseTimeToLiveResponse {
                header: Some(self.headers.member()),
                id,
                ttl: status.remaining,
                granted_ttl: status.granted_ttl,
                keys: status.keys,
            },
            None => pb::LeaseTimeToLiveResponse {
                header: Some(self.headers.member()),
                id,
                ttl: -1,
                granted_ttl: 0,
                keys: Vec::new(),
            },
        }))
    }

    async fn lease_leases(
        &self,
        request: Request<pb::LeaseLeasesRequest>,
    ) -> Result<Response<pb::LeaseLeasesResponse>, Status> {
        admit(&self.auth, &request)?;
        let leases = self
            .cores
            .call(move |node, core| Box::pin(async move { client(&node, core).leases().await }))
            .await?;
        Ok(Response::new(pb::LeaseLeasesResponse {
            header: Some(self.headers.member()),
            leases: leases
                .into_iter()
                .map(|lease| pb::LeaseStatus { id: lease.id })
                .collect(),
        }))
    }
}

impl LeaseService {
    /// Renews the leases a client's stream asks for (gRPC's or the JSON
    /// gateway's), answering each in turn, until the client closes it.
    pub(crate) fn keep_alive(
        &self,
        mut asks: impl Asks<pb::LeaseKeepAliveRequest>,
        identity: Identity,
    ) -> KeepAliveAnswers {
        let (answers, answered) = tokio::sync::mpsc::channel(KEEP_ALIVE_QUEUE);
        let auth = self.auth.clone();

        let (cores, headers) = (self.cores.clone(), self.headers.clone());
        tokio::spawn(async move {
            loop {
                let ask = match asks.next().await {
                    Some(Ok(ask)) => ask,
                    // A request that did not decode ends the stream with
                    // its error.
                    Some(Err(refused)) => {
                        let _ = answers.send(Err(refused)).await;
                        return;
                    }
                    None => return,
                };
                let id = ask.id;
                // Each renewal needs a user as the record is now (a
                // revoked token ends the stream).
                if let Err(refused) = auth.current().admit(identity.credential()) {
                    let _ = answers
                        .send(Err(crate::etcd::errors::auth_status(&refused)))
                        .await;
                    return;
                }
                let renewed = cores
                    .call(move |node, core| {
                        Box::pin(async move { client(&node, core).lease_keep_alive(id).await })
                    })
                    .await;
                // A lease that is gone answers a time to live of 0, as
                // etcd's does; other failures end the stream.
                let answer = match renewed {
                    Ok(ttl) => Ok(ttl),
                    Err(status) if status.code() == tonic::Code::NotFound => Ok(0),
                    Err(status) => Err(status),
                };
                let failed = answer.is_err();
                let answer = answer.map(|ttl| pb::LeaseKeepAliveResponse {
                    header: Some(headers.member()),
                    id,
                    ttl,
                });
                if answers.send(answer).await.is_err() || failed {
                    return;
                }
            }
        });
        Box::pin(futures_util::stream::unfold(
            answered,
            |mut answered| async move { answered.recv().await.map(|answer| (answer, answered)) },
        ))
    }
}
