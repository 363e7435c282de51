//! A distributed lock, as etcd's `concurrency.Mutex`: each contender puts
//! `name/<lease>` under its session's lease; the one with the lowest
//! create revision holds the lock, and the others wait for the key just
//! before theirs to go. The holder's create revision is the fencing token:
//! compare it in a transaction (`Cmp::key(lock.key()).create_revision(..)`)
//! so that a write from a holder that lost the lock fails.

use keel_proto::{CompareResult, LeaseId, RangeRequest, Revision, SortOrder, SortTarget};

use crate::client::{prefix_end, Client};
use crate::error::{Error, Result};
use crate::txn::{Cmp, Op, Txn};
use crate::watch::Watcher;

/// A held lock; release it with [`Client::unlock`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockGuard {
    key: Vec<u8>,
    revision: Revision,
}

impl LockGuard {
    /// The key that holds the lock.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The key's create revision: the fencing token.
    pub fn revision(&self) -> Revision {
        self.revision
    }
}

/// The range `[prefix/, prefix0)` that holds every contender's key.
pub(crate) fn contenders(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let mut start = prefix.to_vec();
    start.push(b'/');
    let end = prefix_end(&start);
    (start, end)
}

/// A contender's place in line.
pub(crate) struct Contender {
    /// Its key.
    pub(crate) key: Vec<u8>,
    /// The key's create revision: its place, and the fencing token.
    pub(crate) revision: Revision,
    /// Whether this call created the key (else an earlier one did).
    pub(crate) created: bool,
}

/// A contender's key while it waits for its turn: taken out of the line
/// if the wait fails or is given up, unless kept once the turn came. Only
/// a key this call created: one found from an earlier call (the same
/// lease) may hold the lock already, and is that call's to release.
pub(crate) struct InLine {
    client: Client,
    key: Vec<u8>,
    revision: Revision,
    armed: bool,
}

impl InLine {
    pub(crate) fn new(client: &Client, contender: &Contender) -> InLine {
        InLine {
            client: client.clone(),
            key: contender.key.clone(),
            revision: contender.revision,
            armed: contender.created,
        }
    }

    /// Its turn came: the key stays.
    pub(crate) fn keep(mut self) {
        self.armed = false;
    }

    /// Takes the key out of the line now (best effort: the lease's expiry
    /// takes it otherwise).
    pub(crate) async fn leave(mut self) {
        self.armed = false;
        let _ = self
            .client
            .delete_if_created(&self.key, self.revision)
            .await;
    }
}

impl Drop for InLine {
    /// Given up while waiting (the caller's future was dropped): the key
    /// is taken out of the line in the background.
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let (client, key, revision) = (
                self.client.clone(),
                std::mem::take(&mut self.key),
                self.revision,
            );
            runtime.spawn(async move {
                let _ = client.delete_if_created(&key, revision).await;
            });
        }
    }
}

/// The key a contender with `lease` puts under `prefix`.
pub(crate) fn contender_key(prefix: &[u8], lease: LeaseId) -> Vec<u8> {
    let mut key = prefix.to_vec();
    key.push(b'/');
    key.extend_from_slice(format!("{lease:x}").as_bytes());
    key
}

impl Client {
    /// Takes the lock `name` for the holder of `lease` (keep the lease
    /// alive while holding it), waiting for earlier contenders.
    ///
    /// # Errors
    /// As any call; [`Error::LeaseLost`] when the lease is gone.
    ///
    /// A call that fails, or is given up (its future dropped, e.g. by a
    /// timeout), takes its key out of the line, as etcd's `Mutex.Lock`
    /// does: left there, it would hold the lock for nobody once its turn
    /// came, for as long as the lease lives.
    pub async fn lock(&self, name: impl AsRef<[u8]>, lease: LeaseId) -> Result<LockGuard> {
        let contender = self.enqueue(name.as_ref(), lease, b"").await?;
        let in_line = InLine::new(self, &contender);
        match self.wait_for_turn(name.as_ref(), &contender, lease).await {
            Ok(()) => {
                in_line.keep();
                Ok(LockGuard {
                    key: contender.key,
                    revision: contender.revision,
                })
            }
            Err(error) => {
                in_line.leave().await;
                Err(error)
            }
        }
    }

    /// Deletes `key` if it is still the one created at `revision` (not a
    /// newer key of the same name).
    pub(crate) async fn delete_if_created(&self, key: &[u8], revision: Revision) -> Result<()> {
        let txn = Txn::new()
            .when([Cmp::key(key.to_vec()).create_revision(CompareResult::Equal, revision)])
            .and_then([Op::delete(key.to_vec())]);
        self.txn(txn.build()).await.map(|_| ())
    }

    /// Releases a lock.
    ///
    /// # Errors
    /// As any call.
    pub async fn unlock(&self, guard: LockGuard) -> Result<()> {
        self.delete(guard.key).await.map(|_| ())
    }

    /// Puts this contender's key (once; a second call with the same lease
    /// finds it).
    pub(crate) async fn enqueue(
        &self,
        prefix: &[u8],
        lease: LeaseId,
        value: &[u8],
    ) -> Result<Contender> {
        let key = contender_key(prefix, lease);
        let txn = Txn::new()
            .when([Cmp::key(key.clone()).create_revision(CompareResult::Equal, 0)])
            .and_then([Op::put_with_lease(key.clone(), value.to_vec(), lease)])
            .or_else([Op::get(key.clone())]);
        let (revision, answer) = match self.txn(txn.build()).await {
            Err(Error::Server {
                code: keel_proto::ErrorCode::LeaseNotFound,
                ..
            }) => return Err(Error::LeaseLost(lease)),
            other => other?,
        };
        if answer.succeeded {
            return Ok(Contender {
                key,
                revision,
                created: true,
            });
        }
        match answer.responses.into_iter().next() {
            Some(keel_proto::ResponseOp::Range(range)) => match range.kvs.into_iter().next() {
                Some(kv) => Ok(Contender {
                    key,
                    revision: kv.create_revision,
                    created: false,
                }),
                None => Err(Error::LeaseLost(lease)),
            },
            _ => Err(Error::Protocol(
                "lock: unexpected transaction answer".into(),
            )),
        }
    }

    /// Waits until no key under `prefix` was created before the
    /// contender's, then checks that its own key is still there: a lease
    /// that expired while waiting took it away, and the turn is not its.
    pub(crate) async fn wait_for_turn(
        &self,
        prefix: &[u8],
        contender: &Contender,
        lease: LeaseId,
    ) -> Result<()> {
        let (start, end) = contenders(prefix);
        loop {
            // The newest contender before this one.
            let request = RangeRequest {
                key: start.clone(),
                range_end: end.clone(),
                max_create_revision: contender.revision.saturating_sub(1),
                sort_order: SortOrder::Descend,
                sort_target: SortTarget::Create,
                limit: 1,
                ..RangeRequest::default()
            };
            let (at, answer) = self.range(request).await?;
            let Some(before) = answer.kvs.into_iter().next() else {
                break;
            };
            wait_for_delete(self, &before.key, at).await?;
        }
        match self.get(contender.key.clone()).await? {
            Some(kv) if kv.create_revision == contender.revision => Ok(()),
            _ => Err(Error::LeaseLost(lease)),
        }
    }
}

/// Waits until `key` is deleted after revision `at`.
async fn wait_for_delete(client: &Client, key: &[u8], at: Revision) -> Result<()> {
    let mut watcher: Watcher = client
        .watch(keel_proto::WatchCreate {
            key: key.to_vec(),
            start_revision: at.saturating_add(1),
            no_put: true,
            ..keel_proto::WatchCreate::default()
        })
        .await?;
    loop {
        let batch = watcher.next().await?;
        if batch
            .events
            .iter()
            .any(|e| e.kind == keel_proto::EventKind::Delete)
        {
            return Ok(());
        }
    }
}
