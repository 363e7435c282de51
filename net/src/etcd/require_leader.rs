//! Go's `WithRequireLeader` on every gRPC call, as etcd's interceptors
//! apply it: a call marked with the `hasleader` metadata is refused with
//! `etcdserver: no leader` while this member is without a leader (the
//! front's leader monitor, `watch::leader_monitor`), before it reaches its
//! service; a watch stream so marked that opened with a leader ends when
//! the leader is lost (watch.rs).

use axum::extract::Request;
use axum::middleware::Next;
use axum::Router;
use tonic::Status;

/// `router` with marked calls refused while `leaderless` says so.
pub(crate) fn refuse_marked_calls(
    router: Router,
    leaderless: tokio::sync::watch::Receiver<bool>,
) -> Router {
    router.layer(axum::middleware::from_fn(
        move |request: Request, next: Next| {
            let leaderless = leaderless.clone();
            async move {
                let marked = request
                    .headers()
                    .get("hasleader")
                    .is_some_and(|value| value == "true");
                if marked && *leaderless.borrow() {
                    return Status::unavailable("etcdserver: no leader").into_http();
                }
                next.run(request).await
            }
        },
    ))
}
