//! The metrics endpoint (docs/metrics.md): `/metrics` in Prometheus' text
//! format on the client port and, with `--listen-metrics`, on a port of
//! its own beside etcd's `/health`, `/livez`, `/readyz` and `/version`,
//! as etcd's `--listen-metrics-urls`. Both are served by etcd's API
//! front (its thread); a scrape reads the cores' figures without asking
//! them anything (`keel_engine::metrics`).

pub mod exposition;
pub mod grpc_calls;

use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

pub use exposition::{scrape, Sources};
pub use grpc_calls::GrpcCalls;

/// How long a client has to finish its TLS handshake.
const HANDSHAKE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// `router` with `/metrics` added.
pub(crate) fn with_metrics(router: Router, sources: Sources) -> Router {
    router.route(
        "/metrics",
        get(move || {
            let text = scrape(&sources);
            async move { ([(header::CONTENT_TYPE, exposition::CONTENT_TYPE)], text).into_response() }
        }),
    )
}

/// Serves `router` over HTTP on `listener` until the runtime ends, over
/// TLS if `tls` is given.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    tls: Option<std::sync::Arc<crate::tls::ServerTls>>,
) {
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(error) => {
                // Out of descriptors, say: not a reason to spin.
                tracing::debug!(%error, "a metrics connection could not be taken");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let service = hyper_util::service::TowerToHyperService::new(router.clone());
        let tls = tls.clone();
        tokio::spawn(async move {
            let builder =
                hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new());
            let served = match tls {
                None => {
                    builder
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                        .await
                }
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.config());
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            builder
                                .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                                .await
                        }
                        Ok(Err(error)) => Err(error.into()),
                        Err(_) => return,
                    }
                }
            };
            if let Err(error) = served {
                tracing::debug!(%error, "a metrics connection ended");
            }
        });
    }
}
