//! Reading a TLS client's first message (its ClientHello) without taking
//! it from the socket, to learn which protocol it asks for: a core serves
//! keel's protocol to clients that offer [`KEEL_ALPN`] itself, and hands
//! the others to etcd's API front, which does its own handshake from the
//! first byte (a TLS session cannot move between the two runtimes).

use super::KEEL_ALPN;

/// Bytes of a TLS record's header: type, version (2), length (2).
pub const RECORD_HEADER: usize = 5;

/// The most bytes of a ClientHello read ahead: one whole record (TLS caps
/// a record at 16 KiB). A client whose hello does not fit is served by
/// the front, which reads the rest as it likes.
pub const MAX_HELLO: usize = RECORD_HEADER + (16 << 10);

/// A TLS handshake record begins with this byte.
const HANDSHAKE_RECORD: u8 = 0x16;

/// How many bytes the first record takes, header included, if `header`
/// (its first [`RECORD_HEADER`] bytes) begins a TLS handshake; `None` if
/// the client speaks something else (plaintext to a TLS port).
pub fn record_len(header: &[u8]) -> Option<usize> {
    match header {
        [HANDSHAKE_RECORD, 3, _, high, low, ..] => {
            Some(RECORD_HEADER + usize::from(u16::from_be_bytes([*high, *low])))
        }
        _ => None,
    }
}

/// Whether the ClientHello `record` (a whole first record) offers keel's
/// protocol. Anything that does not parse is not keel's: the front's
/// handshake then refuses it with the right alert.
pub fn offers_keel(record: &[u8]) -> bool {
    let mut acceptor = rustls::server::Acceptor::default();
    let mut input = record;
    if acceptor.read_tls(&mut input).is_err() {
        return false;
    }
    match acceptor.accept() {
        Ok(Some(accepted)) => accepted
            .client_hello()
            .alpn()
            .is_some_and(|mut offered| offered.any(|protocol| protocol == KEEL_ALPN)),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first record a rustls client with `alpn` sends.
    fn hello(alpn: &[&[u8]]) -> Vec<u8> {
        let mut roots = rustls::RootCertStore::empty();
        let ca = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .self_signed(&rcgen::KeyPair::generate().unwrap())
            .unwrap();
        roots.add(ca.der().clone()).unwrap();
        let mut config =
            rustls::ClientConfig::builder_with_provider(keel_client::tls::crypto_provider())
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_root_certificates(roots)
                .with_no_client_auth();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        let mut client = rustls::ClientConnection::new(
            std::sync::Arc::new(config),
            "127.0.0.1".try_into().unwrap(),
        )
        .unwrap();
        let mut sent = Vec::new();
        client.write_tls(&mut sent).unwrap();
        sent
    }

    #[test]
    fn keel_clients_are_told_from_others_by_alpn() {
        let keel = hello(&[KEEL_ALPN]);
        assert_eq!(record_len(&keel), Some(keel.len()));
        assert!(offers_keel(&keel));
        assert!(offers_keel(&hello(&[b"h2", KEEL_ALPN])));
        assert!(!offers_keel(&hello(&[b"h2"])));
        assert!(!offers_keel(&hello(&[])));
    }

    #[test]
    fn plaintext_and_cut_hellos_are_not_keel() {
        assert_eq!(record_len(b"PRI * HTTP/2.0"), None);
        assert_eq!(record_len(&[8, 0, 0, 0, 1]), None);
        assert_eq!(record_len(&[HANDSHAKE_RECORD, 3]), None);
        let keel = hello(&[KEEL_ALPN]);
        assert!(!offers_keel(keel.get(..keel.len() / 2).unwrap()));
    }
}
