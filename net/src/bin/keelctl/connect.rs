//! How keelctl reaches the servers: keel's protocol through the client
//! crate, and etcd's gRPC for the maintenance calls keel's protocol lacks
//! (snapshot, hash), both over TLS when asked (etcdctl's `--cacert`,
//! `--cert`, `--key`, or an `https://` endpoint).

use std::sync::Arc;

use keel_client::tls::TlsFiles;
use keel_client::{Client, ClientOptions, ClientTls, Credentials};
use keel_etcd_api::etcdserverpb::auth_client::AuthClient;
use keel_etcd_api::etcdserverpb::maintenance_client::MaintenanceClient;
use tonic::transport::{Channel, Endpoint};

use crate::cli::{Cli, Failure};

/// keelctl's way to the servers.
pub(crate) struct Connect {
    keel: ClientOptions,
    /// TLS for gRPC (offering HTTP/2), when TLS is on.
    grpc_tls: Option<Arc<rustls::ClientConfig>>,
    /// The user's token for gRPC calls, once logged in.
    token: std::sync::OnceLock<String>,
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
        let credentials = credentials(cli)?;
        let tls = cli.endpoints.contains("https://") || files != TlsFiles::default();
        if !tls {
            return Ok(Connect {
                keel: ClientOptions {
                    credentials,
                    ..ClientOptions::default()
                },
                grpc_tls: None,
                token: std::sync::OnceLock::new(),
            });
        }
        let keel = ClientTls::from_files(&files).map_err(|e| Failure::bad_args(e.to_string()))?;
        let grpc = keel_client::tls::client_config(&files, &[b"h2"])
            .map_err(|e| Failure::bad_args(e.to_string()))?;
        Ok(Connect {
            keel: ClientOptions {
                tls: Some(keel),
                credentials,
                ..ClientOptions::default()
            },
            grpc_tls: Some(grpc),
            token: std::sync::OnceLock::new(),
        })
    }

    /// `message` as a gRPC request, with the user's token once logged in.
    pub(crate) fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        if let Some(token) = self.token.get().and_then(|t| t.parse().ok()) {
            request.metadata_mut().insert("token", token);
        }
        request
    }

    /// Logs in through `channel` (once) if keelctl has a user: etcd's
    /// Authenticate, whose token every later gRPC call carries. With auth
    /// off there is no token to have, and calls go as nobody.
    async fn log_in(&self, channel: &Channel) -> Result<(), String> {
        let Some(credentials) = &self.keel.credentials else {
            return Ok(());
        };
        if self.token.get().is_some() {
            return Ok(());
        }
        let mut auth = AuthClient::new(channel.clone());
        let login = keel_etcd_api::etcdserverpb::AuthenticateRequest {
            name: credentials.user.clone(),
            password: credentials.password.clone(),
        };
        match auth.authenticate(login).await {
            Ok(answer) => {
                let _ = self.token.set(answer.into_inner().token);
                Ok(())
            }
            Err(status) if status.message() == "etcdserver: authentication is not enabled" => {
                Ok(())
            }
            Err(status) => Err(status.message().to_string()),
        }
    }

    /// etcd's Auth service at `endpoint`, logged in.
    pub(crate) async fn auth(&self, endpoint: &str) -> Result<AuthClient<Channel>, Failure> {
        let channel = self.channel(endpoint).await.map_err(Failure::from)?;
        self.log_in(&channel).await.map_err(Failure::from)?;
        Ok(AuthClient::new(channel))
    }

    /// A client of `endpoints` (`host:port`).
    pub(crate) async fn client<S: AsRef<str>>(
        &self,
        endpoints: &[S],
    ) -> keel_client::Result<Client> {
        Client::connect_with(endpoints, self.keel.clone()).await
    }

    /// etcd's Maintenance service at `endpoint` (`host:port`), logged in.
    pub(crate) async fn maintenance(
        &self,
        endpoint: &str,
    ) -> Result<MaintenanceClient<Channel>, String> {
        let channel = self.channel(endpoint).await?;
        self.log_in(&channel).await?;
        Ok(MaintenanceClient::new(channel))
    }

    /// A gRPC channel to `endpoint`, over TLS when keelctl has it.
    async fn channel(&self, endpoint: &str) -> Result<Channel, String> {
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
        channel.map_err(|e| fail(&e))
    }
}

/// etcdctl's `--user name[:password]` (and `--password`): without a
/// password, it is read from stdin after a prompt.
fn credentials(cli: &Cli) -> Result<Option<Credentials>, Failure> {
    let Some(user) = &cli.user else {
        return Ok(None);
    };
    let (name, password) = match (user.split_once(':'), &cli.password) {
        (_, Some(password)) => (user.clone(), password.clone()),
        (Some((name, password)), None) => (name.to_string(), password.to_string()),
        (None, None) => {
            use std::io::{BufRead, Write};
            eprint!("Password: ");
            let _ = std::io::stderr().flush();
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| Failure::from(e.to_string()))?;
            (
                user.clone(),
                line.trim_end_matches(['\r', '\n']).to_string(),
            )
        }
    };
    if name.is_empty() {
        return Err(Failure::bad_args("--user needs a user name"));
    }
    Ok(Some(Credentials {
        user: name,
        password,
    }))
}
