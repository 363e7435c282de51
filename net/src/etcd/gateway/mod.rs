//! etcd's JSON gateway on the client port: `POST /v3/<service>/<call>`
//! with a request message in the protobuf JSON mapping, answered by the
//! same services as gRPC (see docs/etcd.md, "The JSON gateway"). Unary
//! calls answer the message; streaming calls (watch, lease keep-alive,
//! election observe) answer `{"result": ...}` lines, and their bidirectional
//! ones read request messages from the body one after another, as
//! grpc-gateway does for etcd.

mod codec;
mod framing;

use std::future::Future;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::DefaultBodyLimit;
use axum::http::HeaderMap;
use axum::response::IntoResponse;
use axum::routing::{post, MethodRouter};
use axum::{Extension, Router};
use futures_util::StreamExt;
use keel_etcd_api::etcdserverpb::auth_server::Auth;
use keel_etcd_api::etcdserverpb::cluster_server::Cluster;
use keel_etcd_api::etcdserverpb::kv_server::Kv;
use keel_etcd_api::etcdserverpb::lease_server::Lease;
use keel_etcd_api::etcdserverpb::maintenance_server::Maintenance;
use keel_etcd_api::v3electionpb::election_server::Election;
use keel_etcd_api::v3lockpb::lock_server::Lock;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::etcd::answer_room::{AnswerRoom, ConnectionRoom};
use crate::etcd::identity::{Identity, IdentityOf, PeerName};
use crate::etcd::Services;

type Shared = Arc<Services>;

/// `router` with etcd's gateway paths added (etcd 3.4's `/v3/` prefix).
pub(crate) fn with_gateway(router: Router, services: Shared) -> Router {
    let s = &services;
    router
        .fallback(not_found)
        .route(
            "/v3/kv/range",
            unary(s, |s, r| async move { s.kv.range(r).await }),
        )
        .route(
            "/v3/kv/put",
            unary(s, |s, r| async move { s.kv.put(r).await }),
        )
        .route(
            "/v3/kv/deleterange",
            unary(s, |s, r| async move { s.kv.delete_range(r).await }),
        )
        .route(
            "/v3/kv/txn",
            unary(s, |s, r| async move { s.kv.txn(r).await }),
        )
        .route(
            "/v3/kv/compaction",
            unary(s, |s, r| async move { s.kv.compact(r).await }),
        )
        .route(
            "/v3/watch",
            bidirectional(s, |s, asks, identity| s.watch.open(asks, false, identity)),
        )
        .route(
            "/v3/lease/grant",
            unary(s, |s, r| async move { s.lease.lease_grant(r).await }),
        )
        .route("/v3/lease/revoke", lease_revoke(s))
        .route("/v3/kv/lease/revoke", lease_revoke(s))
        .route(
            "/v3/lease/keepalive",
            bidirectional(s, |s, asks, identity| s.lease.keep_alive(asks, identity)),
        )
        .route("/v3/lease/timetolive", lease_time_to_live(s))
        .route("/v3/kv/lease/timetolive", lease_time_to_live(s))
        .route("/v3/lease/leases", lease_leases(s))
        .route("/v3/kv/lease/leases", lease_leases(s))
        .merge(cluster_and_maintenance(s))
        .merge(lock_and_election(s))
        .merge(auth(s))
}

fn lease_revoke(s: &Shared) -> MethodRouter {
    unary(s, |s, r| async move { s.lease.lease_revoke(r).await })
}

fn lease_time_to_live(s: &Shared) -> MethodRouter {
    unary(s, |s, r| async move { s.lease.lease_time_to_live(r).await })
}

fn lease_leases(s: &Shared) -> MethodRouter {
    unary(s, |s, r| async move { s.lease.lease_leases(r).await })
}

fn cluster_and_maintenance(s: &Shared) -> Router {
    Router::new()
        .route(
            "/v3/cluster/member/add",
            unary(s, |s, r| async move { s.cluster.member_add(r).await }),
        )
        .route(
            "/v3/cluster/member/remove",
            unary(s, |s, r| async move { s.cluster.member_remove(r).await }),
        )
        .route(
            "/v3/cluster/member/update",
            unary(s, |s, r| async move { s.cluster.member_update(r).await }),
        )
        .route(
            "/v3/cluster/member/list",
            unary(s, |s, r| async move { s.cluster.member_list(r).await }),
        )
        .route(
            "/v3/cluster/member/promote",
            unary(s, |s, r| async move { s.cluster.member_promote(r).await }),
        )
        .route(
            "/v3/maintenance/alarm",
            unary(s, |s, r| async move { s.maintenance.alarm(r).await }),
        )
        .route(
            "/v3/maintenance/status",
            unary(s, |s, r| async move { s.maintenance.status(r).await }),
        )
        .route(
            "/v3/maintenance/defragment",
            unary(s, |s, r| async move { s.maintenance.defragment(r).await }),
        )
        .route(
            "/v3/maintenance/hash",
            unary(s, |s, r| async move { s.maintenance.hash(r).await }),
        )
        .route(
            "/v3/maintenance/hashkv",
            unary(s, |s, r| async move { s.maintenance.hash_kv(r).await }),
        )
        .route(
            "/v3/maintenance/snapshot",
            server_streaming(s, |s, r| async move { s.maintenance.snapshot(r).await }),
        )
        .route(
            "/v3/maintenance/transfer-leadership",
            unary(s, |s, r| async move { s.maintenance.move_leader(r).await }),
        )
        .route(
            "/v3/maintenance/downgrade",
            unary(s, |s, r| async move { s.maintenance.downgrade(r).await }),
        )
}

fn lock_and_election(s: &Shared) -> Router {
    Router::new()
        .route(
            "/v3/lock/lock",
            unary(s, |s, r| async move { s.lock.lock(r).await }),
        )
        .route(
            "/v3/lock/unlock",
            unary(s, |s, r| async move { s.lock.unlock(r).await }),
        )
        .route(
            "/v3/election/campaign",
            unary(s, |s, r| async move { s.election.campaign(r).await }),
        )
        .route(
            "/v3/election/proclaim",
            unary(s, |s, r| async move { s.election.proclaim(r).await }),
        )
        .route(
            "/v3/election/leader",
            unary(s, |s, r| async move { s.election.leader(r).await }),
        )
        .route(
            "/v3/election/observe",
            server_streaming(s, |s, r| async move { s.election.observe(r).await }),
        )
        .route(
            "/v3/election/resign",
            unary(s, |s, r| async move { s.election.resign(r).await }),
        )
}

fn auth(s: &Shared) -> Router {
    Router::new()
        .route(
            "/v3/auth/enable",
            unary(s, |s, r| async move { s.auth.auth_enable(r).await }),
        )
        .route(
            "/v3/auth/disable",
            unary(s, |s, r| async move { s.auth.auth_disable(r).await }),
        )
        .route(
            "/v3/auth/status",
            unary(s, |s, r| async move { s.auth.auth_status(r).await }),
        )
        .route(
            "/v3/auth/authenticate",
            unary(s, |s, r| async move { s.auth.authenticate(r).await }),
        )
        .route(
            "/v3/auth/user/add",
            unary(s, |s, r| async move { s.auth.user_add(r).await }),
        )
        .route(
            "/v3/auth/user/get",
            unary(s, |s, r| async move { s.auth.user_get(r).await }),
        )
        .route(
            "/v3/auth/user/list",
            unary(s, |s, r| async move { s.auth.user_list(r).await }),
        )
        .route(
            "/v3/auth/user/delete",
            unary(s, |s, r| async move { s.auth.user_delete(r).await }),
        )
        .route(
            "/v3/auth/user/changepw",
            unary(
                s,
                |s, r| async move { s.auth.user_change_password(r).await },
            ),
        )
        .route(
            "/v3/auth/user/grant",
            unary(s, |s, r| async move { s.auth.user_grant_role(r).await }),
        )
        .route(
            "/v3/auth/user/revoke",
            unary(s, |s, r| async move { s.auth.user_revoke_role(r).await }),
        )
        .route(
            "/v3/auth/role/add",
            unary(s, |s, r| async move { s.auth.role_add(r).await }),
        )
        .route(
            "/v3/auth/role/get",
            unary(s, |s, r| async move { s.auth.role_get(r).await }),
        )
        .route(
            "/v3/auth/role/list",
            unary(s, |s, r| async move { s.auth.role_list(r).await }),
        )
        .route(
            "/v3/auth/role/delete",
            unary(s, |s, r| async move { s.auth.role_delete(r).await }),
        )
        .route(
            "/v3/auth/role/grant",
            unary(
                s,
                |s, r| async move { s.auth.role_grant_permission(r).await },
            ),
        )
        .route(
            "/v3/auth/role/revoke",
            unary(
                s,
                |s, r| async move { s.auth.role_revoke_permission(r).await },
            ),
        )
}

/// A unary call: the body is its request, the answer its response.
fn unary<Req, Resp, Call, Answer>(services: &Shared, call: Call) -> MethodRouter
where
    Req: DeserializeOwned + Default + Send + 'static,
    Resp: Serialize + Send + 'static,
    Call: Fn(Shared, Request<Req>) -> Answer + Clone + Send + Sync + 'static,
    Answer: Future<Output = Result<Response<Resp>, Status>> + Send + 'static,
{
    let services = services.clone();
    post(
        move |connection: Option<Extension<Arc<ConnectionRoom>>>,
              name: Option<Extension<PeerName>>,
              headers: HeaderMap,
              body: Bytes| {
            let (services, call) = (services.clone(), call.clone());
            async move {
                let request = match codec::decode::<Req>(&body) {
                    Ok(request) => request,
                    Err(refused) => return codec::refusal(&refused),
                };
                let mut request = Request::new(request);
                if let Some(Extension(connection)) = connection {
                    request.extensions_mut().insert(connection);
                }
                Identity::of_http(&headers, name.as_ref().map(|n| &n.0)).attach(&mut request);
                match call(services, request).await {
                    Ok(answered) => {
                        // A large answer's room goes with its JSON body
                        // (answer_room.rs).
                        let room = answered.extensions().get::<AnswerRoom>().cloned();
                        let mut response = codec::answer(&answered.into_inner());
                        if let Some(room) = room {
                            response.extensions_mut().insert(room);
                        }
                        response
                    }
                    Err(refused) => codec::refusal(&refused),
                }
            }
        },
    )
    .layer(DefaultBodyLimit::max(codec::MAX_BODY_BYTES))
}

/// A call with one request and a stream of answers.
fn server_streaming<Req, Resp, Answers, Call, Answer>(services: &Shared, call: Call) -> MethodRouter
where
    Req: DeserializeOwned + Default + Send + 'static,
    Resp: Serialize + Send + 'static,
    Answers: futures_util::Stream<Item = Result<Resp, Status>> + Send + 'static,
    Call: Fn(Shared, Request<Req>) -> Answer + Clone + Send + Sync + 'static,
    Answer: Future<Output = Result<Response<Answers>, Status>> + Send + 'static,
{
    let services = services.clone();
    post(
        move |name: Option<Extension<PeerName>>, headers: HeaderMap, body: Bytes| {
            let (services, call) = (services.clone(), call.clone());
            async move {
                let request = match codec::decode::<Req>(&body) {
                    Ok(request) => request,
                    Err(refused) => return codec::refusal(&refused),
                };
                let mut request = Request::new(request);
                Identity::of_http(&headers, name.as_ref().map(|n| &n.0)).attach(&mut request);
                match call(services, request).await {
                    Ok(answers) => codec::stream(answers.into_inner()),
                    Err(refused) => codec::refusal(&refused),
                }
            }
        },
    )
    .layer(DefaultBodyLimit::max(codec::MAX_BODY_BYTES))
}

/// A call with a stream each way: request messages are read from the body
/// as they come, answers streamed as they are made. The first message is
/// decoded before the call opens, so that one that does not decode is
/// refused with an error status, as etcd's gateway refuses it.
fn bidirectional<Req, Resp, Answers, Open>(services: &Shared, open: Open) -> MethodRouter
where
    Req: DeserializeOwned + Send + 'static,
    Resp: Serialize + Send + 'static,
    Answers: futures_util::Stream<Item = Result<Resp, Status>> + Send + 'static,
    Open: Fn(&Services, codec::Decoded<Req>, Identity) -> Answers + Clone + Send + Sync + 'static,
{
    let services = services.clone();
    post(
        move |name: Option<Extension<PeerName>>, headers: HeaderMap, body: Body| {
            let (services, open) = (services.clone(), open.clone());
            async move {
                let identity = Identity::of_http(&headers, name.as_ref().map(|n| &n.0));
                let mut asks = codec::decode_stream::<Req>(body);
                let first = match asks.next().await {
                    Some(Err(refused)) => return codec::refusal(&refused),
                    first => first,
                };
                let asks = futures_util::stream::iter(first).chain(asks);
                codec::stream(open(&services, Box::pin(asks), identity))
            }
        },
    )
}

/// A path nobody serves: gRPC's `Unimplemented` to a gRPC call (as tonic
/// answers it), etcd's plain `404 Not Found` to anything else (a curl with
/// a wrong path), where tonic's answer would be an empty 200.
async fn not_found(request: axum::extract::Request) -> axum::response::Response {
    let grpc = request
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .is_some_and(|kind| kind.as_bytes().starts_with(b"application/grpc"));
    if grpc {
        Status::unimplemented("").into_http()
    } else {
        (
            axum::http::StatusCode::NOT_FOUND,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            "Not Found",
        )
            .into_response()
    }
}
