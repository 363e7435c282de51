//! Leader election, as etcd's `concurrency.Election`: each candidate puts
//! `name/<lease>` with its value; the candidate whose key has the lowest
//! create revision leads. The leader's create revision is its fencing
//! token; `proclaim` changes the leader's value only while it still
//! leads.

use keel_proto::{
    CompareResult, KeyValue, LeaseId, RangeRequest, Revision, SortOrder, SortTarget, WatchCreate,
};

use crate::client::Client;
use crate::error::{Error, Result};
use crate::lock::{contenders, InLine};
use crate::txn::{Cmp, Op, Txn};

/// What a successful campaign holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    name: Vec<u8>,
    key: Vec<u8>,
    revision: Revision,
    lease: LeaseId,
}

impl Leadership {
    /// The election's name.
    pub fn name(&self) -> &[u8] {
        &self.name
    }

    /// The leader's key.
    pub fn key(&self) -> &[u8] {
        &self.key
    }

    /// The key's create revision: the fencing token.
    pub fn revision(&self) -> Revision {
        self.revision
    }

    /// The lease that keeps the leadership.
    pub fn lease(&self) -> LeaseId {
        self.lease
    }
}

impl Client {
    /// Campaigns in election `name` with `value`, under `lease` (keep it
    /// alive), and returns once this candidate leads. A campaign that fails
    /// or is given up (its future dropped) withdraws its candidacy, as
    /// etcd's `Campaign` resigns.
    ///
    /// # Errors
    /// As any call; [`Error::LeaseLost`] when the lease is gone.
    pub async fn campaign(
        &self,
        name: impl AsRef<[u8]>,
        lease: LeaseId,
        value: impl AsRef<[u8]>,
    ) -> Result<Leadership> {
        let name = name.as_ref();
        let contender = self.enqueue(name, lease, value.as_ref()).await?;
        let leadership = Leadership {
            name: name.to_vec(),
            key: contender.key.clone(),
            revision: contender.revision,
            lease,
        };
        // Failed or given up, the candidacy is withdrawn (etcd's Campaign
        // resigns), so that it never leads for nobody.
        let in_line = InLine::new(self, &contender);
        let waited = async {
            // A candidate found from an earlier campaign keeps its place
            // but takes the new value.
            if !contender.created {
                self.proclaim(&leadership, value).await?;
            }
            self.wait_for_turn(name, &contender, lease).await
        };
        match waited.await {
            Ok(()) => {
                in_line.keep();
                Ok(leadership)
            }
            Err(error) => {
                in_line.leave().await;
                Err(error)
            }
        }
    }

    /// Sets the leader's value, if `leadership` still holds.
    ///
    /// # Errors
    /// As any call; [`Error::LeaseLost`] when the leader's key is gone.
    pub async fn proclaim(&self, leadership: &Leadership, value: impl AsRef<[u8]>) -> Result<()> {
        let txn = Txn::new()
            .when([Cmp::key(leadership.key.clone())
                .create_revision(CompareResult::Equal, leadership.revision)])
            .and_then([Op::put_with_lease(
                leadership.key.clone(),
                value.as_ref().to_vec(),
                leadership.lease,
            )]);
        let (_, answer) = self.txn(txn.build()).await?;
        if answer.succeeded {
            Ok(())
        } else {
            Err(Error::LeaseLost(leadership.lease))
        }
    }

    /// Gives up leadership (or candidacy).
    ///
    /// # Errors
    /// As any call.
    pub async fn resign(&self, leadership: Leadership) -> Result<()> {
        let txn = Txn::new()
            .when([Cmp::key(leadership.key.clone())
                .create_revision(CompareResult::Equal, leadership.revision)])
            .and_then([Op::delete(leadership.key)]);
        self.txn(txn.build()).await.map(|_| ())
    }

    /// The current leader's key and value, if any; with the revision read at.
    ///
    /// # Errors
    /// As any call.
    pub async fn leader(&self, name: impl AsRef<[u8]>) -> Result<(Revision, Option<KeyValue>)> {
        let (key, range_end) = contenders(name.as_ref());
        let request = RangeRequest {
            key,
            range_end,
            sort_order: SortOrder::Ascend,
            sort_target: SortTarget::Create,
            limit: 1,
            ..RangeRequest::default()
        };
        let (revision, answer) = self.range(request).await?;
        Ok((revision, answer.kvs.into_iter().next()))
    }

    /// Follows election `name`: each call of [`Observer::next`] answers the
    /// leader when it changes (a new leadership, or a new value).
    ///
    /// # Errors
    /// As any call.
    pub async fn observe(&self, name: impl AsRef<[u8]>) -> Result<Observer> {
        let name = name.as_ref().to_vec();
        let (start, end) = contenders(&name);
        let (revision, leader) = self.leader(&name).await?;
        let watcher = self
            .watch(WatchCreate {
                key: start,
                range_end: end,
                start_revision: revision.saturating_add(1),
                ..WatchCreate::default()
            })
            .await?;
        Ok(Observer {
            client: self.clone(),
            name,
            watcher,
            last: None,
            pending: leader,
        })
    }
}

/// Leader changes of one election.
pub struct Observer {
    client: Client,
    name: Vec<u8>,
    watcher: crate::Watcher,
    last: Option<KeyValue>,
    pending: Option<KeyValue>,
}

impl Observer {
    /// The next leader (waits for a change from the last one answered).
    ///
    /// # Errors
    /// As any call.
    pub async fn next(&mut self) -> Result<KeyValue> {
        loop {
            if let Some(leader) = self.pending.take() {
                let changed = self.last.as_ref().is_none_or(|last| {
                    last.key != leader.key
                        || last.create_revision != leader.create_revision
                        || last.value != leader.value
                });
                if changed {
                    self.last = Some(leader.clone());
                    return Ok(leader);
                }
            }
            // Wait for any change under the election, then ask who leads.
            self.watcher.next().await?;
            self.pending = self.client.leader(&self.name).await?.1;
        }
    }
}
