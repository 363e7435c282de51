//! Watches that survive reconnects: a [`Watcher`] remembers the last
//! revision it delivered and, when its connection fails, opens a new one
//! and asks again from the revision after it. The caller sees every event
//! once, in revision order, across the break.

use keel_proto::{Event, Request, ResponseBody, Revision, WatchCreate};

use crate::client::Client;
use crate::connection::Subscription;
use crate::error::{Error, Result};

/// What a watch hands out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WatchResponse {
    /// Everything up to this revision has been delivered.
    pub revision: Revision,
    /// The events, in revision order; empty for a progress notification.
    pub events: Vec<Event>,
}

/// A live watch. Dropping it cancels it on the server.
pub struct Watcher {
    client: Client,
    request: WatchCreate,
    /// The next revision to ask for after a reconnect.
    next_revision: Revision,
    /// The watch on the server, `None` while it must be created again.
    current: Option<Subscription>,
    /// Successful reconnects so far (for tests and metrics).
    reconnects: u64,
}

/// Longest wait between two attempts to reach the server again.
const MAX_RECONNECT_DELAY: std::time::Duration = std::time::Duration::from_secs(2);

impl Client {
    /// Watches `request.key` (or its range) from `request.start_revision`
    /// (0: from now on).
    ///
    /// # Errors
    /// As any call; `Compacted` when the start is below the compaction.
    pub async fn watch(&self, request: WatchCreate) -> Result<Watcher> {
        let mut watcher = Watcher {
            client: self.clone(),
            next_revision: request.start_revision,
            request,
            current: None,
            reconnects: 0,
        };
        watcher.open().await?;
        Ok(watcher)
    }

    /// Watches every key starting with `prefix`, from now on.
    ///
    /// # Errors
    /// As [`Client::watch`].
    pub async fn watch_prefix(&self, prefix: impl Into<Vec<u8>>) -> Result<Watcher> {
        let (key, range_end) = crate::client::prefix_range(&prefix.into());
        self.watch(WatchCreate {
            key,
            range_end,
            ..WatchCreate::default()
        })
        .await
    }
}

impl Watcher {
    /// Creates the watch on the server, from `next_revision`.
    async fn open(&mut self) -> Result<()> {
        // `deliver` (connection.rs) hands a message for many watches to
        // each of them, so the server may send shared ones.
        let request = Request::WatchCreate(WatchCreate {
            start_revision: self.next_revision,
            shared_frames: true,
            ..self.request.clone()
        });
        let route = self
            .client
            .route_range(&self.request.key, &self.request.range_end);
        let mut subscription = self.client.open_stream(route, request).await?;
        let created = subscription.next().await?;
        match created.body {
            ResponseBody::Watch(w) if w.created => {
                // From now on, resume after what this watch starts at.
                if self.next_revision == 0 {
                    self.next_revision = created.revision.saturating_add(1);
                }
            }
            ResponseBody::Error(body) => return Err(body.into()),
            other => return Err(crate::client::unexpected("watch", &other)),
        }
        self.current = Some(subscription);
        Ok(())
    }

    /// The next events (or progress notification). Reconnects as needed,
    /// for as long as it takes; every response holds whole revisions, so
    /// resuming after the last one delivered misses nothing.
    ///
    /// # Errors
    /// [`Error::Compacted`] when the history it must resume from was
    /// compacted away; other server errors.
    pub async fn next(&mut self) -> Result<WatchResponse> {
        loop {
            let Some(subscription) = self.current.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            let message = match subscription.next().await {
                Ok(message) => message,
                Err(Error::Disconnected) => {
                    self.current = None;
                    continue;
                }
                // Read too slowly: this server watch is dropped (and
                // cancelled), and a new one resumes after the last
                // revision handed out, from history.
                Err(Error::WatchLagged) => {
                    self.cancel_in_background();
                    continue;
                }
                Err(error) => return Err(error),
            };
            match message.body {
                ResponseBody::Watch(w) if w.canceled => {
                    self.current = None;
                    return Err(Error::Compacted {
                        compact_revision: w.compact_revision,
                    });
                }
                ResponseBody::Watch(w) => {
                    self.next_revision = self.next_revision.max(message.revision.saturating_add(1));
                    return Ok(WatchResponse {
                        revision: message.revision,
                        events: w.events,
                    });
                }
                ResponseBody::Error(body) => {
                    self.current = None;
                    return Err(body.into());
                }
                other => return Err(crate::client::unexpected("watch", &other)),
            }
        }
    }

    /// Creates the watch again, retrying with backoff while the server
    /// cannot be reached.
    async fn reconnect(&mut self) -> Result<()> {
        let mut delay = std::time::Duration::from_millis(50);
        loop {
            match self.open().await {
                Ok(()) => {
                    self.reconnects += 1;
                    return Ok(());
                }
                Err(Error::Disconnected | Error::Connect { .. }) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(MAX_RECONNECT_DELAY);
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Asks the server for a progress notification: a response with no
    /// events, after every event up to its revision. Reconnects first
    /// when the watch is between connections.
    ///
    /// # Errors
    /// As any call.
    pub async fn request_progress(&mut self) -> Result<()> {
        if self.current.is_none() {
            self.reconnect().await?;
        }
        let Some(subscription) = &self.current else {
            return Err(Error::Disconnected);
        };
        let call = subscription
            .connection()
            .call(self.client.next_id(), &Request::WatchProgress);
        let answer = self.client.within_deadline(call).await?;
        match answer.body {
            ResponseBody::Error(body) => Err(body.into()),
            _ => Ok(()),
        }
    }

    /// The revision a reconnect would resume from.
    pub fn next_revision(&self) -> Revision {
        self.next_revision
    }

    /// How many times the watch has had to reconnect.
    pub fn reconnects(&self) -> u64 {
        self.reconnects
    }

    /// Cancels the watch on the server and waits for it to confirm.
    ///
    /// # Errors
    /// As any call.
    pub async fn cancel(mut self) -> Result<()> {
        let Some(subscription) = self.current.take() else {
            return Ok(());
        };
        let watch_id = subscription.id();
        let connection = subscription.connection().clone();
        drop(subscription);
        let cancel = Request::WatchCancel { watch_id };
        let call = connection.call(self.client.next_id(), &cancel);
        let answer = self.client.within_deadline(call).await?;
        match answer.body {
            ResponseBody::Error(body) => Err(body.into()),
            _ => Ok(()),
        }
    }
}

impl Watcher {
    /// Bytes of events received for this watcher and not yet taken by
    /// [`Watcher::next`]: at most about 8 MiB and one message, however
    /// slowly it is read (past that it resumes from history).
    pub fn buffered_bytes(&self) -> usize {
        self.current
            .as_ref()
            .map_or(0, crate::connection::Subscription::buffered_bytes)
    }

    /// Drops the server watch in use and tells the server, without waiting
    /// for its answer.
    fn cancel_in_background(&mut self) {
        let Some(subscription) = self.current.take() else {
            return;
        };
        let watch_id = subscription.id();
        let connection = subscription.connection().clone();
        drop(subscription);
        // Best effort: tell the server, without waiting for the answer.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            let id = self.client.next_id();
            handle.spawn(async move {
                let _ = connection
                    .call(id, &Request::WatchCancel { watch_id })
                    .await;
            });
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.cancel_in_background();
    }
}
