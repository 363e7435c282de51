//! etcd's plain HTTP endpoints on the client port, for probes and
//! operators' scripts: `/health`, `/livez`, `/readyz` and `/version`.

use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::etcd::cores::{client, Cores};

/// `router` with etcd's HTTP endpoints added.
pub(crate) fn with_endpoints(router: Router, cores: Cores, etcd_version: String) -> Router {
    let version =
        format!("{{\"etcdserver\":\"{etcd_version}\",\"etcdcluster\":\"{etcd_version}\"}}");
    router
        .route(
            "/health",
            get(move || {
                let cores = cores.clone();
                async move { health(&cores).await }
            }),
        )
        .route("/livez", get(|| async { "ok" }))
        .route("/readyz", get(|| async { "ok" }))
        .route(
            "/version",
            get(move || {
                let version = version.clone();
                async move { json(StatusCode::OK, version) }
            }),
        )
}

fn json(status: StatusCode, body: String) -> axum::response::Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Healthy, as etcd's `/health`: every shard has a leader and no alarm is
/// raised; otherwise 503 with the reason.
async fn health(cores: &Cores) -> axum::response::Response {
    let checked = cores
        .call(|node, core| {
            Box::pin(async move {
                let client = client(&node, core);
                let leaderless = client
                    .status()
                    .await?
                    .iter()
                    .filter(|s| s.leader == 0)
                    .count();
                Ok((leaderless, client.alarms().await?.len()))
            })
        })
        .await;
    let reason = match checked {
        Ok((0, 0)) => None,
        Ok((0, _)) => Some("ALARM NOSPACE".to_string()),
        Ok((leaderless, _)) => Some(format!("RAFT NO LEADER ({leaderless} shards)")),
        Err(status) => Some(status.message().to_string()),
    };
    match reason {
        None => json(
            StatusCode::OK,
            "{\"health\":\"true\",\"reason\":\"\"}".to_string(),
        ),
        Some(reason) => json(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("{{\"health\":\"false\",\"reason\":{reason:?}}}"),
        ),
    }
}
