//! One request: the engine call it maps to, and its answer.

use keel_engine::mvcc::KvError;
use keel_engine::shard::{Consistency, NodeError};
use keel_proto::{
    ErrorCode, LeaseStatus, LeaseTimeToLive, Request, Response, ResponseBody, WatchEvents,
};

use crate::server::answers::{AnswerRoom, AnswerSize};
use crate::server::connection::{error_response, Connection};
use crate::server::outbound::Closed;
use crate::server::{alarm, convert, status, watch};

/// Serves `request` and queues its answer in `room`, reserved for it
/// before it ran (`answers.rs`; for a watch: its stream).
///
/// Every request in flight holds its future, so the common ones (puts and
/// reads) are served by a future of their own size; the rest, whose
/// futures are several times larger, are boxed when they come.
pub(crate) async fn handle(
    connection: &Connection,
    id: u64,
    request: Request,
    room: AnswerRoom,
) -> Result<(), Closed> {
    if connection.ctx.client().is_learner() && !served_by_learners(&request) {
        let message = "rpc not supported for learner: this member is a learner catching up; \
                       ask a voting member"
            .to_string();
        let refusal = error_response(id, ErrorCode::Learner, message);
        return connection.respond_in(refusal, room).await;
    }
    match request {
        Request::Put(put) => {
            let client = connection.ctx.client();
            let answer = client.put(convert::put_request(put)).await.map(applied);
            let_watch_groups_go_first(connection).await;
            connection.respond_in(answer_to(id, answer), room).await
        }
        Request::Range(range) if range.revision == 0 => read(connection, id, range, room).await,
        other => Box::pin(handle_any(connection, id, other, room)).await,
    }
}

/// What a learner serves, as in etcd: status, the member list and
/// serializable reads (what it holds may lag; nothing it says claims more).
fn served_by_learners(request: &Request) -> bool {
    match request {
        Request::Status => true,
        Request::Range(range) => range.serializable,
        Request::Member { action, .. } => *action == keel_proto::MemberAction::List,
        _ => false,
    }
}

/// Lets this core's watch groups send the events a write released before
/// the write's answer is queued, as etcd hands events to its watchers
/// before it answers (docs/server.md, "Watch groups"). The apply released
/// them before it answered, so one turn of the core's queue is enough for
/// the groups to queue their messages. Only where groups exist: without
/// watchers a write pays nothing.
async fn let_watch_groups_go_first(connection: &Connection) {
    if connection.ctx.watch_groups.any() {
        futures_lite::future::yield_now().await;
    }
}

/// A range read, at the consistency it asks for, answered in `room`. The
/// engine stops a read whose answer outgrows its room; one that outgrew a
/// small room runs again in a large one (`answers.rs`).
async fn read(
    connection: &Connection,
    id: u64,
    range: keel_proto::RangeRequest,
    room: AnswerRoom,
) -> Result<(), Closed> {
    let consistency = if range.serializable {
        Consistency::Serializable
    } else {
        Consistency::Linearizable
    };
    let request = convert::range_request(range);
    let client = connection.ctx.client();
    let mut room = Some(room);
    loop {
        let Some(held) = room.take() else {
            return Err(Closed);
        };
        let mut attempt = request.clone();
        attempt.answer_limit = held.answer_limit();
        let answer = client.range(attempt, consistency).await;
        if let Err(NodeError::Kv(KvError::AnswerTooLarge { .. })) = &answer {
            if held.is_small() {
                drop(held);
                room = Some(connection.answers.reserve(AnswerSize::Large).await);
                continue;
            }
        }
        let answer = answer.map(|(revision, answer)| {
            (
                revision,
                ResponseBody::Range(convert::range_response(answer)),
            )
        });
        return connection.respond_in(answer_to(id, answer), held).await;
    }
}

/// Serves any request (see [`handle`]).
async fn handle_any(
    connection: &Connection,
    id: u64,
    request: Request,
    room: AnswerRoom,
) -> Result<(), Closed> {
    let client = connection.ctx.client();
    let answer: Result<(u64, ResponseBody), NodeError> = match request {
        Request::Range(range) => return read(connection, id, range, room).await,
        Request::Put(put) => {
            let answer = client.put(convert::put_request(put)).await.map(applied);
            let_watch_groups_go_first(connection).await;
            answer
        }
        Request::DeleteRange(delete) => {
            let answer = client
                .delete_range(convert::delete_request(delete))
                .await
                .map(applied);
            let_watch_groups_go_first(connection).await;
            answer
        }
        Request::Txn(txn) => {
            let answer = client.txn(convert::txn_request(txn)).await.map(applied);
            let_watch_groups_go_first(connection).await;
            answer
        }
        Request::Compact { revision } => client.compact(revision).await.map(applied),
        Request::WatchCreate(create) => {
            drop(room);
            return watch::run(connection, id, create).await;
        }
        Request::WatchCancel { watch_id } => {
            let watch = connection.watches.borrow_mut().remove(&watch_id);
            // The watch answers the cancel itself once it has stopped.
            let cancel = watch::WatchCommand::Cancel { request_id: id };
            if watch.is_some_and(|commands| commands.send(cancel).is_ok()) {
                return Ok(());
            }
            let message = format!("watch {watch_id} not found on this connection");
            let refusal = error_response(id, ErrorCode::WatchNotFound, message);
            return connection.respond_in(refusal, room).await;
        }
        Request::WatchProgress => client.current_revision().await.map(|revision| {
            for commands in connection.watches.borrow().values() {
                let _ = commands.send(watch::WatchCommand::Progress(revision));
            }
            (revision, ResponseBody::Watch(WatchEvents::default()))
        }),
        Request::LeaseGrant { id: lease, ttl } => client
            .lease_grant(lease, ttl)
            .await
            .map(|granted| (0, ResponseBody::LeaseGrant { id: granted, ttl })),
        Request::LeaseRevoke { id: lease } => client
            .lease_revoke(lease)
            .await
            .map(|()| (0, ResponseBody::LeaseRevoke)),
        // As etcd: a keep-alive of a lease that is gone answers TTL 0.
        Request::LeaseKeepAlive { id: lease } => match client.lease_keep_alive(lease).await {
            Ok(ttl) => Ok((0, ResponseBody::LeaseKeepAlive { id: lease, ttl })),
            Err(NodeError::Kv(KvError::LeaseNotFound(_))) => {
                Ok((0, ResponseBody::LeaseKeepAlive { id: lease, ttl: 0 }))
            }
            Err(error) => Err(error),
        },
        // As etcd: a lease that does not exist has TTL -1.
        Request::LeaseTimeToLive { id: lease, keys } => {
            client.lease_time_to_live(lease, keys).await.map(|found| {
                let answer = match found {
                    Some(status) => LeaseTimeToLive {
                        id: lease,
                        granted_ttl: status.granted_ttl,
                        ttl: status.remaining,
                        keys: status.keys,
                    },
                    None => LeaseTimeToLive {
                        id: lease,
                        granted_ttl: 0,
                        ttl: -1,
                        keys: Vec::new(),
                    },
                };
                (0, ResponseBody::LeaseTimeToLive(answer))
            })
        }
        Request::LeaseLeases => client.leases().await.map(|leases| {
            let leases = leases
                .into_iter()
                .map(|info| LeaseStatus {
                    id: info.id,
                    ttl: info.ttl,
                })
                .collect();
            (0, ResponseBody::LeaseLeases(leases))
        }),
        Request::Status => status::status(&connection.ctx, &client).await,
        Request::Alarm {
            action,
            member_id,
            alarm,
        } => alarm::alarm(&client, action, member_id, alarm).await,
        Request::Leader {
            action,
            shard,
            member_id,
        } => super::leader::leader(&client, action, shard, member_id).await,
        Request::Member {
            action,
            member_id,
            name,
            peer_address,
            learner,
        } => {
            let change = super::members::change(action, member_id, name, peer_address, learner);
            super::members::members(&connection.ctx, &client, change).await
        }
        Request::Authenticate { name, password } => {
            return authenticate(connection, id, name, password, room).await;
        }
        // Taken by the dispatcher before it gets here (`connection.rs`).
        Request::UseToken { .. } => Ok((0, ResponseBody::UseToken)),
    };
    connection.respond_in(answer_to(id, answer), room).await
}

/// A token for `name`, checked on the login threads (bcrypt).
async fn authenticate(
    connection: &Connection,
    id: u64,
    name: String,
    password: String,
    room: AnswerRoom,
) -> Result<(), Closed> {
    let token = connection.ctx.auth.log_in(name, password).await;
    let answer = match token {
        Ok(token) => Response {
            id,
            revision: 0,
            body: ResponseBody::Authenticate { token },
        },
        Err(refused) => error_response(
            id,
            crate::server::permits::error_code(&refused),
            refused.to_string(),
        ),
    };
    connection.respond_in(answer, room).await
}

fn answer_to(id: u64, answer: Result<(u64, ResponseBody), NodeError>) -> Response {
    match answer {
        Ok((revision, body)) => Response { id, revision, body },
        Err(error) => Response {
            id,
            revision: 0,
            body: ResponseBody::Error(convert::error(&error)),
        },
    }
}

fn applied(applied: keel_engine::mvcc::Applied) -> (u64, ResponseBody) {
    (applied.revision, convert::write_response(applied.response))
}
