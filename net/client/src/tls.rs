//! TLS to a server (docs/security.md): the files a client is given
//! (etcdctl's `--cacert`, `--cert`, `--key`), read into a rustls
//! configuration. The server, keel's own protocol on its client and core
//! ports, is told apart from etcd's gRPC on the same port by the
//! application protocol the client offers: [`KEEL_ALPN`].

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};

/// The application protocol (ALPN) keel's clients offer: a server with
/// TLS serves keel's protocol to connections that offer it, and etcd's
/// API (HTTP/2, HTTP/1) to the others.
pub const KEEL_ALPN: &[u8] = b"keel";

/// The files a TLS client uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificates of the authorities trusted to sign the server's
    /// certificate; `None` trusts the system's.
    pub ca: Option<PathBuf>,
    /// This client's PEM certificate chain, for servers that ask for one
    /// (`--client-cert-auth`); needs `key`.
    pub cert: Option<PathBuf>,
    /// The private key of `cert` (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: Option<PathBuf>,
}

/// TLS that cannot be set up, and why.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file cannot be read, or holds no usable PEM.
    #[error("{path}: {why}")]
    File {
        /// The file.
        path: PathBuf,
        /// Why.
        why: String,
    },
    /// The files do not make a configuration (a key that does not match
    /// its certificate, a certificate without its key, ...).
    #[error("{0}")]
    Config(String),
}

/// The certificates in the PEM file at `path` (at least one).
///
/// # Errors
/// [`TlsError::File`] if it cannot be read or holds none.
pub fn read_certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let file_error = |why: String| TlsError::File {
        path: path.to_path_buf(),
        why,
    };
    let certificates = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(e.to_string()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(e.to_string()))?;
    if certificates.is_empty() {
        return Err(file_error("no PEM certificate in it".to_string()));
    }
    Ok(certificates)
}

/// The private key in the PEM file at `path`.
///
/// # Errors
/// [`TlsError::File`] if it cannot be read or holds no key.
pub fn read_private_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::File {
        path: path.to_path_buf(),
        why: e.to_string(),
    })
}

/// The authorities in the PEM file at `path`, as rustls keeps them.
///
/// # Errors
/// [`TlsError`] if it cannot be read or one certificate is unusable.
pub fn read_roots(path: &Path) -> Result<rustls::RootCertStore, TlsError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in read_certificates(path)? {
        roots.add(certificate).map_err(|e| TlsError::File {
            path: path.to_path_buf(),
            why: e.to_string(),
        })?;
    }
    Ok(roots)
}

/// The crypto keel uses, named rather than left to rustls' process-wide
/// default (which is ambiguous, and panics, once two providers are
/// linked in). ring, not aws-lc (which needs cmake to build): rustls
/// marks ring's provider deprecated only for its lack of post-quantum key
/// exchange.
#[allow(deprecated)]
pub fn crypto_provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A client configuration from `files`, offering `alpn` (TLS 1.2 and 1.3).
///
/// # Errors
/// [`TlsError`] naming the file or setting at fault.
pub fn client_config(
    files: &TlsFiles,
    alpn: &[&[u8]],
) -> Result<Arc<rustls::ClientConfig>, TlsError> {
    let roots = match &files.ca {
        Some(path) => read_roots(path)?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            let (added, _ignored) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(TlsError::Config(
                    "no trusted authorities: give --cacert".to_string(),
                ));
            }
            roots
        }
    };
    let builder = rustls::ClientConfig::builder_with_provider(crypto_provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config(e.to_string()))?
        .with_root_certificates(roots);
    let mut config = match (&files.cert, &files.key) {
        (Some(cert), Some(key)) => builder
            .with_client_auth_cert(read_certificates(cert)?, read_private_key(key)?)
            .map_err(|e| TlsError::Config(format!("{}: {e}", cert.display())))?,
        (None, None) => builder.with_no_client_auth(),
        (Some(_), None) => return Err(TlsError::Config("--cert needs --key".to_string())),
        (None, Some(_)) => return Err(TlsError::Config("--key needs --cert".to_string())),
    };
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Ok(Arc::new(config))
}

/// The name a server at `address` (`host:port`) is checked against: its
/// IP address, or its DNS name.
///
/// # Errors
/// [`TlsError::Config`] for an address without a usable host.
pub fn server_name(address: &str) -> Result<ServerName<'static>, TlsError> {
    let host = match address.rsplit_once(':') {
        Some((host, _port)) => host,
        None => address,
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    ServerName::try_from(host.to_string())
        .map_err(|e| TlsError::Config(format!("{address}: not a server name: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_names_are_the_host_of_an_address() {
        assert_eq!(
            server_name("127.0.0.1:2379").unwrap(),
            ServerName::IpAddress(std::net::Ipv4Addr::LOCALHOST.into())
        );
        assert_eq!(
            server_name("[::1]:2379").unwrap(),
            ServerName::IpAddress(std::net::Ipv6Addr::LOCALHOST.into())
        );
        assert_eq!(
            server_name("etcd.example:2379").unwrap(),
            ServerName::try_from("etcd.example").unwrap()
        );
        assert!(server_name("bad host:1").is_err());
    }

    #[test]
    fn a_file_without_pem_certificates_is_refused() {
        let dir = tempfile_dir();
        let path = dir.join("none.pem");
        std::fs::write(&path, "not pem").unwrap();
        let files = TlsFiles {
            ca: Some(path.clone()),
            cert: None,
            key: None,
        };
        assert!(matches!(
            client_config(&files, &[]),
            Err(TlsError::File { .. })
        ));
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("keel-client-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
