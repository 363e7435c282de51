//! How keelctl reaches the servers: keel's protocol through the client
//! crate, and etcd's gRPC for the maintenance calls keel's protocol lacks
//! (snapshot, hash), both over TLS when asked (etcdctl's `--cacert`,
//! `--cert`, `--key`, or an `https://` endpoint).

use std::sync::Arc;

use keel_client::tls::TlsFiles;
use keel_client::{Client, ClientOptions, ClientTls};
use keel_etcd_api::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::{Channel, Endpoint};

use crate::cli::{Cli, Failure};

/// keelctl's way to the servers.
#[derive(Clone)]
pub(crate) struct Connect {
    keel: ClientOptions,
    /// TLS for gRPC (offering HTTP/2), when TLS is on.
    grpc_tls: Option<Arc<rustls::ClientConfig>>,
}

impl Connect {
    /// From the command line: TLS when an endpoint is `https://` or a
    /// certificate flag is given.
    pub(crate) fn from_cli(cli: &Cli) -> Result<Connect, Failure> {
        let files = TlsFiles {
            ca: cli.cacert.clone(),
            cert: cli.cert.clone(),
            key: cli.key.clone(),
        };
        let tls = cli.endpoints.contains("https://") || files != TlsFiles::default();
        if !tls {
            return Ok(Connect {
                keel: ClientOptions::default(),
                grpc_tls: None,
            });
        }
        let keel = ClientTls::from_files(&files).map_err(|e| Failure::bad_args(e.to_string()))?;
        let grpc = keel_client::tls::client_config(&files, &[b"h2"])
            .map_err(|e| Failure::bad_args(e.to_string()))?;
        Ok(Connect {
            keel: ClientOptions {
                tls: Some(keel),
                ..ClientOptions::default()
            },
            grpc_tls: Some(grpc),
        })
    }

    /// A client of `endpoints` (`host:port`).
    pub(crate) async fn client<S: AsRef<str>>(
        &self,
        endpoints: &[S],
    ) -> keel_client::Result<Client> {
        Client::connect_with(endpoints, self.keel.clone()).await
    }

    /// etcd's Maintenance service at `endpoint` (`host:port`).
    pub(crate) async fn maintenance(
        &self,
        endpoint: &str,
    ) -> Result<MaintenanceClient<Channel>, String> {
        let fail = |e: &dyn std::fmt::Display| format!("{endpoint}: {e}");
        let uri = Endpoint::from_shared(format!("http://{endpoint}")).map_err(|e| fail(&e))?;
        let channel = match &self.grpc_tls {
            None => uri.connect().await,
            Some(tls) => {
                let (tls, target) = (tls.clone(), endpoint.to_string());
                uri.connect_with_connector(tower::service_fn(move |_| {
                    let (tls, target) = (tls.clone(), target.clone());
                    async move {
                        let name = keel_client::tls::server_name(&target)
                            .map_err(std::io::Error::other)?;
                        let stream = tokio::net::TcpStream::connect(&target).await?;
                        stream.set_nodelay(true)?;
                        let stream = tokio_rustls::TlsConnector::from(tls)
                            .connect(name, stream)
                            .await?;
                        Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
                    }
                }))
                .await
            }
        };
        Ok(MaintenanceClient::new(channel.map_err(|e| fail(&e))?))
    }
}
