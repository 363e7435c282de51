//! TLS on the server's ports (docs/security.md): the files of etcd's
//! `--cert-file`, `--key-file`, `--trusted-ca-file` and
//! `--client-cert-auth` (and their `--peer-*` twins), read into a rustls
//! configuration that is read again whenever one of the files changes, so
//! that a renewed certificate takes effect without a restart.
//!
//! Every handshake takes the configuration current when it starts (one
//! atomic load); connections already open keep the session they made.

pub mod client_hello;
mod reload;

use std::path::PathBuf;
use std::sync::Arc;

use arc_swap::ArcSwap;
use keel_client::tls::{crypto_provider, read_certificates, read_private_key, read_roots};

pub use keel_client::tls::{TlsError, KEEL_ALPN};

/// What one of the server's TLS ports is given.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// The server's PEM certificate chain (`--cert-file`).
    pub cert: PathBuf,
    /// Its private key (`--key-file`).
    pub key: PathBuf,
    /// The authorities a client's certificate must be signed by
    /// (`--trusted-ca-file`). As etcd does, giving it makes a client
    /// certificate required.
    pub trusted_ca: Option<PathBuf>,
    /// Whether a client must show a certificate (`--client-cert-auth`);
    /// it needs `trusted_ca`.
    pub client_cert_auth: bool,
}

impl TlsFiles {
    /// Whether a client must show a certificate signed by `trusted_ca`.
    pub fn requires_client_certificate(&self) -> bool {
        self.trusted_ca.is_some() || self.client_cert_auth
    }

    /// Every file these settings read, for the reloader to watch.
    fn paths(&self) -> Vec<PathBuf> {
        let mut paths = vec![self.cert.clone(), self.key.clone()];
        paths.extend(self.trusted_ca.clone());
        paths
    }
}

/// ALPN protocols, in the server's order of preference.
pub type Alpn = Vec<Vec<u8>>;

/// What the cores offer keel's clients.
fn keel_alpn() -> Alpn {
    vec![KEEL_ALPN.to_vec()]
}

/// What etcd's API front offers on the client port: gRPC (HTTP/2) and
/// HTTP/1 (its JSON gateway, `/metrics`, `/health`); a client that offers
/// neither gets HTTP, by its first bytes. Keel's own clients, which offer
/// [`KEEL_ALPN`], are served on the cores with [`ServerTls::keel_config`]
/// (`client_hello.rs`), which offers only that: each side agrees to what
/// it serves.
pub fn client_port_alpn() -> Alpn {
    vec![b"h2".to_vec(), b"http/1.1".to_vec()]
}

/// A server configuration from `files`, offering `alpn` (TLS 1.2 and 1.3).
///
/// # Errors
/// [`TlsError`] naming the file or setting at fault.
pub fn server_config(files: &TlsFiles, alpn: &Alpn) -> Result<rustls::ServerConfig, TlsError> {
    let builder = rustls::ServerConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = if files.requires_client_certificate() {
        let Some(ca) = &files.trusted_ca else {
            return Err(TlsError::Config(
                "client-cert-auth needs a trusted-ca-file to check client certificates against"
                    .to_string(),
            ));
        };
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(read_roots(ca)?),
            crypto_provider(),
        )
        .build()
        .map_err(|e| TlsError::Config(format!("{}: {e}", ca.display())))?;
        builder.with_client_cert_verifier(verifier)
    } else {
        builder.with_no_client_auth()
    };
    let mut config = builder
        .with_single_cert(
            read_certificates(&files.cert)?,
            read_private_key(&files.key)?,
        )
        .map_err(|e| {
            TlsError::Config(format!(
                "{} and {}: {e}",
                files.cert.display(),
                files.key.display()
            ))
        })?;
    config.alpn_protocols = alpn.clone();
    Ok(config)
}

/// A client configuration from a member's peer `files`: it trusts the
/// peer authorities and shows the member's own certificate, which the
/// other members check as their `--peer-trusted-ca-file` says.
///
/// # Errors
/// [`TlsError`] naming the file or setting at fault.
pub fn peer_client_config(files: &TlsFiles) -> Result<rustls::ClientConfig, TlsError> {
    let Some(ca) = &files.trusted_ca else {
        return Err(TlsError::Config(
            "peer TLS needs --peer-trusted-ca-file: members check each other's certificates"
                .to_string(),
        ));
    };
    rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(read_roots(ca)?)
        .with_client_auth_cert(
            read_certificates(&files.cert)?,
            read_private_key(&files.key)?,
        )
        .map_err(|e| TlsError::Config(format!("{}: {e}", files.cert.display())))
}

/// One TLS port's current configuration, read again when its files change.
#[derive(Debug)]
pub struct ServerTls {
    files: TlsFiles,
    alpn: Alpn,
    current: ArcSwap<rustls::ServerConfig>,
    /// On the client port: the configuration of keel's own clients.
    keel: Option<ArcSwap<rustls::ServerConfig>>,
    /// For members: the configuration they connect to peers with.
    peer_client: Option<ArcSwap<rustls::ClientConfig>>,
}

impl ServerTls {
    /// Reads `files` for a port that offers `alpn`, and starts watching
    /// them (`reload.rs`) for as long as the answer lives.
    ///
    /// # Errors
    /// [`TlsError`] naming the file or setting at fault.
    pub fn start(files: TlsFiles, alpn: Alpn) -> Result<Arc<ServerTls>, TlsError> {
        ServerTls::start_with(files, alpn, false, false)
    }

    /// [`ServerTls::start`] for the client port: etcd's API with
    /// [`client_port_alpn`], keel's protocol with its own configuration.
    ///
    /// # Errors
    /// As [`ServerTls::start`].
    pub fn start_client(files: TlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        ServerTls::start_with(files, client_port_alpn(), true, false)
    }

    /// [`ServerTls::start`] for a member's peer port: it also keeps the
    /// configuration the member connects to its peers with.
    ///
    /// # Errors
    /// As [`ServerTls::start`].
    pub fn start_peer(files: TlsFiles) -> Result<Arc<ServerTls>, TlsError> {
        ServerTls::start_with(files, Vec::new(), false, true)
    }

    fn start_with(
        files: TlsFiles,
        alpn: Alpn,
        keel: bool,
        peer: bool,
    ) -> Result<Arc<ServerTls>, TlsError> {
        let current = ArcSwap::from_pointee(server_config(&files, &alpn)?);
        let keel = match keel {
            true => Some(ArcSwap::from_pointee(server_config(&files, &keel_alpn())?)),
            false => None,
        };
        let peer_client = match peer {
            true => Some(ArcSwap::from_pointee(peer_client_config(&files)?)),
            false => None,
        };
        let tls = Arc::new(ServerTls {
            files,
            alpn,
            current,
            keel,
            peer_client,
        });
        reload::watch(&tls);
        Ok(tls)
    }

    /// The configuration a handshake starting now uses.
    pub fn config(&self) -> Arc<rustls::ServerConfig> {
        self.current.load_full()
    }

    /// The configuration a keel client's handshake starting now uses (the
    /// client port's; another port's own).
    pub fn keel_config(&self) -> Arc<rustls::ServerConfig> {
        self.keel
            .as_ref()
            .map_or_else(|| self.current.load_full(), ArcSwap::load_full)
    }

    /// The configuration a connection to a peer starting now uses (a
    /// member's peer port only).
    pub fn peer_client_config(&self) -> Option<Arc<rustls::ClientConfig>> {
        self.peer_client.as_ref().map(ArcSwap::load_full)
    }

    /// The user a client's certificate `chain` names: its common name,
    /// and only with `--client-cert-auth` (as etcd: `--trusted-ca-file`
    /// alone requires a certificate but does not make its name a user).
    pub fn user_of(
        &self,
        chain: Option<&[rustls::pki_types::CertificateDer<'_>]>,
    ) -> Option<Arc<str>> {
        match self.files.client_cert_auth {
            true => chain.and_then(common_name),
            false => None,
        }
    }

    /// The files, as given.
    pub fn files(&self) -> &TlsFiles {
        &self.files
    }

    /// Reads the files again and, if they make a configuration, uses it
    /// from now on; if not, keeps the one before and says why.
    ///
    /// # Errors
    /// [`TlsError`] naming the file or setting at fault.
    pub fn reload(&self) -> Result<(), TlsError> {
        let config = server_config(&self.files, &self.alpn)?;
        let keel = match &self.keel {
            Some(_) => Some(server_config(&self.files, &keel_alpn())?),
            None => None,
        };
        if let Some(peer_client) = &self.peer_client {
            peer_client.store(Arc::new(peer_client_config(&self.files)?));
        }
        if let (Some(slot), Some(keel)) = (&self.keel, keel) {
            slot.store(Arc::new(keel));
        }
        self.current.store(Arc::new(config));
        Ok(())
    }
}

/// The common name of the first certificate of `chain` (the client's own):
/// its user with `--client-cert-auth` when it sends no token.
pub fn common_name(chain: &[rustls::pki_types::CertificateDer<'_>]) -> Option<Arc<str>> {
    let first = chain.first()?;
    let (_, certificate) = x509_parser::parse_x509_certificate(first.as_ref()).ok()?;
    let name = certificate
        .subject()
        .iter_common_name()
        // The last, as Go's (and so etcd's) `Subject.CommonName`.
        .last()?
        .as_str()
        .ok()?;
    Some(Arc::from(name))
}
