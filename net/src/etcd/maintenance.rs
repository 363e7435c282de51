//! etcd's Maintenance service: Status, Alarm, MoveLeader, Defragment (a
//! no-op: the copy-on-write tree reuses its free pages and never needs
//! one), Hash, HashKV and Snapshot (snapshot.rs). Downgrade is not served.

use std::pin::Pin;
use std::sync::Arc;

use futures_util::Stream;
use keel_engine::mvcc::{AlarmAction, AlarmKind};
use keel_engine::shard::Alarm;
use keel_etcd_api::etcdserverpb as pb;
use keel_etcd_api::etcdserverpb::alarm_request::AlarmAction as EtcdAction;
use keel_etcd_api::etcdserverpb::maintenance_server::Maintenance;
use tonic::{Request, Response, Status};

use crate::etcd::cores::{client, Cores};
use crate::etcd::header::Headers;
use crate::etcd::permits::check;
use crate::etcd::snapshot;

/// The Maintenance service of one node.
#[derive(Clone)]
pub(crate) struct MaintenanceService {
    pub(crate) auth: crate::auth::Auth,
    pub(crate) cores: Cores,
    pub(crate) headers: Headers,
    /// The etcd version Status reports (`--etcd-version`).
    pub(crate) etcd_version: String,
    /// Reads of the whole keyspace (Snapshot, Hash, HashKV) that may run
    /// at once; more wait their turn.
    pub(crate) scans: Arc<tokio::sync::Semaphore>,
}

/// Whole-keyspace reads at once, per node.
pub(crate) const CONCURRENT_SCANS: usize = 2;

type SnapshotChunks =
    Pin<Box<dyn Stream<Item = Result<pb::SnapshotResponse, Status>> + Send + 'static>>;

/// Chunks of a snapshot made ahead of the client's reading.
const SNAPSHOT_QUEUE: usize = 4;

/// The gRPC metadata that asks HashKV for one shard's hash.
pub(crate) const SHARD_METADATA: &str = "keel-shard";

fn not_yet(what: &str) -> Status {
    Status::unimplemented(format!("etcdserver: keel does not serve {what} yet"))
}

fn etcd_alarm(alarm: Alarm) -> pb::AlarmMember {
    pb::AlarmMember {
        member_id: alarm.member,
        alarm: match alarm.kind {
            AlarmKind::NoSpace => pb::AlarmType::Nospace as i32,
            AlarmKind::Corrupt => pb::AlarmType::Corrupt as i32,
        },
    }
}

#[tonic::async_trait]
impl Maintenance for MaintenanceService {
    async fn alarm(
        &self,
        request: Request<pb::AlarmRequest>,
    ) -> Result<Response<pb::AlarmResponse>, Status> {
        // Listing alarms needs a user; raising or clearing one, root.
        check(&self.auth, &request, |p, r| match r.action {
            0 => Ok(()),
            _ => p.administer(),
        })?;
        let request = request.into_inner();
        let action = EtcdAction::try_from(request.action)
            .map_err(|_| Status::invalid_argument("etcdserver: unknown alarm action"))?;
        let kind = pb::AlarmType::try_from(request.alarm)
            .map_err(|_| Status::invalid_argument("etcdserver: unknown alarm"))?;
        let member = request.member_id;
        // etcd answers a GET without a header (`etcdctl alarm list -w
        // json` prints `{}`).
        let header = (action != EtcdAction::Get).then(|| self.headers.member());
        let alarms = match (action, kind) {
            (EtcdAction::Get, _) => {
                self.cores
                    .call(|node, core| Box::pin(async move { client(&node, core).alarms().await }))
                    .await?
            }
            // etcd's deactivate of NONE clears every alarm.
            (EtcdAction::Deactivate, pb::AlarmType::None) => {
                self.cores
                    .call(|node, core| {
                        Box::pin(async move { client(&node, core).disarm_alarms().await })
                    })
                    .await?
            }
            (action, kind @ (pb::AlarmType::Nospace | pb::AlarmType::Corrupt)) => {
                let action = match action {
                    EtcdAction::Activate => AlarmAction::Activate,
                    _ => AlarmAction::Deactivate,
                };
                let kind = match kind {
                    pb::AlarmType::Corrupt => AlarmKind::Corrupt,
                    _ => AlarmKind::NoSpace,
                };
                let alarm = Alarm { member, kind };
                self.cores
                    .call(move |node, core| {
                        Box::pin(async move { client(&node, core).set_alarm(action, alarm).await })
                    })
                    .await?;
                vec![alarm]
            }
            (_, pb::AlarmType::None) => Vec::new(),
        };
        Ok(Response::new(pb::AlarmResponse {
            header,
            alarms: alarms.into_iter().map(etcd_alarm).collect(),
        }))
    }

    async fn status(
        &self,
        request: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        check(&self.auth, &request, |_, _| Ok(()))?;
        let (shards, alarms, learner) = self
            .cores
            .call(|node, core| {
                Box::pin(async move {
                    let client = client(&node, core);
                    let shards = client.status().await?;
                    let alarms = client.alarms().await?;
                    Ok((shards, alarms, client.is_learner()))
                })
            })
            .await?;
        // etcd has one Raft group; keel has one per shard. Its leader and
        // indexes are shard 0's; its size is every shard's.
        let first = shards.first();
        let db_size: u64 = shards.iter().map(|s| s.db_size).sum();
        let db_size = i64::try_from(db_size).unwrap_or(i64::MAX);
        Ok(Response::new(pb::StatusResponse {
            header: Some(self.headers.member()),
            version: self.etcd_version.clone(),
            db_size,
            leader: first.map_or(0, |s| s.leader),
            raft_index: first.map_or(0, |s| s.raft_index),
            raft_term: first.map_or(0, |s| s.raft_term),
            raft_applied_index: first.map_or(0, |s| s.applied_index),
            errors: alarms
                .iter()
                .map(|a| format!("memberID:{} alarm:NOSPACE", a.member))
                .collect(),
            db_size_in_use: db_size,
            is_learner: learner,
            ..pb::StatusResponse::default()
        }))
    }

    async fn defragment(
        &self,
        request: Request<pb::DefragmentRequest>,
    ) -> Result<Response<pb::DefragmentResponse>, Status> {
        check(&self.auth, &request, |p, _| p.administer())?;
        // etcd's answer carries no header (clients' tests check it).
        Ok(Response::new(pb::DefragmentResponse { header: None }))
    }

    /// etcd hashes its whole database file; keel's tree files differ
    /// between members byte for byte, so Hash is HashKV at the current
    /// revision.
    async fn hash(
        &self,
        request: Request<pb::HashRequest>,
    ) -> Result<Response<pb::HashResponse>, Status> {
        check(&self.auth, &request, |p, _| p.administer())?;
        let _turn = self.scans.acquire().await;
        let (now, _) = snapshot::revisions(&self.cores).await?;
        let hash = snapshot::hash_at(&self.cores, now).await?;
        Ok(Response::new(pb::HashResponse {
            header: Some(self.headers.at(now)),
            hash,
        }))
    }

    /// The hash of every pair at a revision (the current one for 0); see
    /// `snapshot.rs` for what is hashed. `compact_revision` is the latest
    /// compaction, -1 when there was none, as etcd answers.
    async fn hash_kv(
        &self,
        request: Request<pb::HashKvRequest>,
    ) -> Result<Response<pb::HashKvResponse>, Status> {
        check(&self.auth, &request, |p, _| p.administer())?;
        // keel's own: one shard's hash (docs/corruption.md), when the
        // call's metadata names it.
        let shard = match request.metadata().get(SHARD_METADATA) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .ok()
                    .and_then(|s| s.parse::<usize>().ok())
                    .filter(|shard| *shard < self.cores.shard_count())
                    .ok_or_else(|| {
                        Status::invalid_argument(format!(
                            "etcdserver: {SHARD_METADATA} names no shard of this cluster"
                        ))
                    })?,
            ),
        };
        let wanted = request.into_inner().revision;
        let _turn = self.scans.acquire().await;
        let (now, compacted) = snapshot::revisions(&self.cores).await?;
        let at = match u64::try_from(wanted) {
            Ok(0) | Err(_) => now,
            Ok(at) if at > now => {
                return Err(Status::out_of_range(
                    "etcdserver: mvcc: required revision is a future revision",
                ))
            }
            Ok(at) => at,
        };
        let hash = match shard {
            None => snapshot::hash_at(&self.cores, at).await?,
            Some(shard) => {
                self.cores
                    .call_for_shard(shard, move |node, core| {
                        Box::pin(async move { client(&node, core).hash_shard(shard, at).await })
                    })
                    .await?
            }
        };
        Ok(Response::new(pb::HashKvResponse {
            header: Some(self.headers.at(now)),
            hash,
            compact_revision: if compacted == 0 { -1 } else { compacted as i64 },
            hash_revision: at as i64,
        }))
    }

    type SnapshotStream = SnapshotChunks;

    /// A keel snapshot file of the keyspace at the current revision and
    /// the leases (net/PROTOCOL.md, "Saved snapshots"), in chunks.
    async fn snapshot(
        &self,
        request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        check(&self.auth, &request, |p, _| p.administer())?;
        let (chunks, sent) = tokio::sync::mpsc::channel(SNAPSHOT_QUEUE);
        tokio::spawn(snapshot::stream(
            self.cores.clone(),
            self.headers.clone(),
            self.scans.clone(),
            chunks,
        ));
        Ok(Response::new(Box::pin(futures_util::stream::unfold(
            sent,
            |mut sent| async move { sent.recv().await.map(|chunk| (chunk, sent)) },
        ))))
    }

    /// etcd has one leader; keel has one per shard: every shard's
    /// leadership moves to the target, and stays pinned there as `keelctl
    /// move-leader` pins it (docs/cluster.md, "Leadership placement").
    async fn move_leader(
        &self,
        request: Request<pb::MoveLeaderRequest>,
    ) -> Result<Response<pb::MoveLeaderResponse>, Status> {
        check(&self.auth, &request, |p, _| p.administer())?;
        let to = request.into_inner().target_id;
        let moved = self
            .cores
            .call(move |node, core| {
                Box::pin(async move {
                    let client = client(&node, core);
                    let shards: Vec<usize> = (0..client.shard_count()).collect();
                    client.move_leaders(&shards, to).await
                })
            })
            .await;
        match moved {
            // etcd's answer carries no header (clients' tests check it).
            Ok(true) => Ok(Response::new(pb::MoveLeaderResponse { header: None })),
            // etcd's answer for a transfer that did not finish in time.
            Ok(false) => Err(Status::unavailable(
                "etcdserver: request timed out, leader transfer took too long",
            )),
            Err(refused) if refused.code() == tonic::Code::InvalidArgument => Err(
                Status::failed_precondition("etcdserver: bad leader transferee"),
            ),
            Err(refused) => Err(refused),
        }
    }

    async fn downgrade(
        &self,
        request: Request<pb::DowngradeRequest>,
    ) -> Result<Response<pb::DowngradeResponse>, Status> {
        check(&self.auth, &request, |p, _| p.administer())?;
        Err(not_yet("Downgrade"))
    }
}
