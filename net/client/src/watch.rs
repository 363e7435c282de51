//! Watches that survive reconnects: a [`Watcher`] remembers the last
//! revision it delivered and, when its connection fails, opens a new one
//! and asks again from the revision after it. The caller sees every event
//! once, in revision order, across the break.

use keel_proto::{Event, Request, ResponseBody, Revision, WatchCreate};

use crate::client::{Client, Route};
use crate::connection::{Connection, StreamReceiver};
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
    route: Route,
    /// The next revision to ask for after a reconnect.
    next_revision: Revision,
    current: Option<(Connection, u64, StreamReceiver)>,
    /// Reconnects made so far (for tests and metrics).
    reconnects: u64,
}

impl Client {
    /// Watches `request.key` (or its range) from `request.start_revision`
    /// (0: from now on).
    ///
    /// # Errors
    /// As any call; `Compacted` when the start is below the compaction.
    pub async fn watch(&self, request: WatchCreate) -> Result<Watcher> {
        let route = self.route_range(&request.key, &request.range_end);
        let mut watcher = Watcher {
            client: self.clone(),
            next_revision: request.start_revision,
            request,
            route,
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
        let key = prefix.into();
        self.watch(WatchCreate {
            range_end: crate::prefix_end(&key),
            key,
            ..WatchCreate::default()
        })
        .await
    }
}

impl Watcher {
    /// Creates the watch on the server, from `next_revision`.
    async fn open(&mut self) -> Result<()> {
        let id = self.client.next_id();
        let request = Request::WatchCreate(WatchCreate {
            start_revision: self.next_revision,
            ..self.request.clone()
        });
        let (connection, mut receiver) = self.client.open_stream(self.route, id, request).await?;
        let created = receiver.recv().await.ok_or(Error::Disconnected)??;
        match created.body {
            ResponseBody::Watch(w) if w.created => {
                // From now on, resume after what this watch starts at.
                if self.next_revision == 0 {
                    self.next_revision = created.revision.saturating_add(1);
                }
            }
            ResponseBody::Watch(w) if w.canceled => {
                connection.forget(id);
                return Err(Error::Compacted {
                    compact_revision: w.compact_revision,
                });
            }
            ResponseBody::Error(body) => {
                connection.forget(id);
                return Err(body.into());
            }
            other => return Err(crate::client::unexpected("watch", &other)),
        }
        self.current = Some((connection, id, receiver));
        Ok(())
    }

    /// The next events (or progress notification). Reconnects as needed.
    ///
    /// # Errors
    /// [`Error::Compacted`] when the history it must resume from was
    /// compacted away; server errors; [`Error::Connect`] when no endpoint
    /// can be reached again.
    pub async fn next(&mut self) -> Result<WatchResponse> {
        loop {
            let Some((_, _, receiver)) = self.current.as_mut() else {
                self.reconnect().await?;
                continue;
            };
            let message = match receiver.recv().await {
                Some(Ok(message)) => message,
                Some(Err(Error::Disconnected)) | None => {
                    self.current = None;
                    continue;
                }
                Some(Err(error)) => return Err(error),
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

    async fn reconnect(&mut self) -> Result<()> {
        let mut delay = std::time::Duration::from_millis(50);
        loop {
            self.reconnects += 1;
            match self.open().await {
                Ok(()) => return Ok(()),
                Err(Error::Disconnected | Error::Connect { .. }) if delay.as_secs() < 5 => {
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(error) => return Err(error),
            }
        }
    }

    /// Asks the server for a progress notification: a response with no
    /// events, after every event up to its revision.
    ///
    /// # Errors
    /// As any call.
    pub async fn request_progress(&self) -> Result<()> {
        if let Some((connection, _, _)) = &self.current {
            connection
                .call(self.client.next_id(), &Request::WatchProgress)
                .await?;
        }
        Ok(())
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
        if let Some((connection, watch_id, _)) = self.current.take() {
            connection.forget(watch_id);
            let answer = connection
                .call(self.client.next_id(), &Request::WatchCancel { watch_id })
                .await?;
            if let ResponseBody::Error(body) = answer.body {
                return Err(body.into());
            }
        }
        Ok(())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        if let Some((connection, watch_id, _)) = self.current.take() {
            connection.forget(watch_id);
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
}
