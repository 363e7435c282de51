//! Certificates for the TLS tests, written as PEM files: two authorities
//! (the cluster's and a stranger's), and certificates each signs, ECDSA
//! P-256 as an operator's would be.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// One authority, able to sign more certificates.
pub struct Authority {
    issuer: Issuer<'static, KeyPair>,
    /// Its certificate's PEM file.
    pub cert: PathBuf,
    dir: PathBuf,
}

/// A certificate and its key, as files.
#[derive(Debug, Clone)]
pub struct Pair {
    pub cert: PathBuf,
    pub key: PathBuf,
}

/// How a certificate is made.
pub struct Leaf<'a> {
    pub name: &'a str,
    /// Its subject's common name (a user's name, for CN identity).
    pub common_name: &'a str,
    /// Whether it is already expired.
    pub expired: bool,
    /// Serial number (tests of reloading tell certificates apart by it).
    pub serial: u64,
}

impl Authority {
    /// A new authority named `name`, its files in `dir`.
    pub fn new(dir: &Path, name: &str) -> Authority {
        std::fs::create_dir_all(dir).unwrap();
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let certificate = params.self_signed(&key).unwrap();
        let cert = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&cert, certificate.pem()).unwrap();
        Authority {
            issuer: Issuer::new(params, key),
            cert,
            dir: dir.to_path_buf(),
        }
    }

    /// A certificate for servers and clients at 127.0.0.1 and localhost.
    pub fn sign(&self, leaf: Leaf<'_>) -> Pair {
        let key = KeyPair::generate().unwrap();
        let mut params =
            CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, leaf.common_name);
        params.serial_number = Some(leaf.serial.into());
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let now = time::OffsetDateTime::now_utc();
        if leaf.expired {
            params.not_before = now - time::Duration::days(30);
            params.not_after = now - time::Duration::days(1);
        } else {
            params.not_before = now - time::Duration::days(1);
            params.not_after = now + time::Duration::days(30);
        }
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        let pair = Pair {
            cert: self.dir.join(format!("{}.pem", leaf.name)),
            key: self.dir.join(format!("{}-key.pem", leaf.name)),
        };
        std::fs::write(&pair.cert, certificate.pem()).unwrap();
        std::fs::write(&pair.key, key.serialize_pem()).unwrap();
        pair
    }

    /// [`Authority::sign`] for a certificate that is valid now.
    pub fn valid(&self, name: &str, common_name: &str) -> Pair {
        self.sign(Leaf {
            name,
            common_name,
            expired: false,
            serial: 1,
        })
    }
}
