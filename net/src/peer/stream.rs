//! A connection between members: plain TCP, or TLS when the member has
//! `--peer-cert-file` (docs/security.md). Both ends then show a
//! certificate, and each checks the other's against its
//! `--peer-trusted-ca-file`: a member whose certificate another authority
//! signed is refused whichever side connects.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use futures_lite::{AsyncRead, AsyncWrite};
use glommio::net::TcpStream;

use crate::tls::ServerTls;

/// One connection to or from a peer.
pub(crate) enum PeerStream {
    Plain(TcpStream),
    Tls(Box<futures_rustls::TlsStream<TcpStream>>),
}

impl PeerStream {
    /// Connects to a peer at `address`, with TLS if `tls` is given.
    pub(crate) async fn connect(
        address: SocketAddr,
        timeout: Duration,
        tls: Option<&ServerTls>,
    ) -> io::Result<PeerStream> {
        let stream = TcpStream::connect_timeout(address, timeout).await?;
        stream.set_nodelay(true)?;
        let Some(tls) = tls else {
            return Ok(PeerStream::Plain(stream));
        };
        let config = tls
            .peer_client_config()
            .ok_or_else(|| io::Error::other("no peer TLS configuration"))?;
        let name = rustls::pki_types::ServerName::IpAddress(address.ip().into());
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io::Error::from)?;
        let handshake = futures_rustls::TlsConnector::from(config).connect(name, stream);
        let stream = handshake.await?;
        stream
            .get_ref()
            .0
            .set_read_timeout(None)
            .map_err(io::Error::from)?;
        Ok(PeerStream::Tls(Box::new(stream.into())))
    }

    /// Takes a connection a peer opened, with TLS if `tls` is given; the
    /// handshake must end within `timeout`.
    pub(crate) async fn accept(
        stream: TcpStream,
        timeout: Duration,
        tls: Option<&ServerTls>,
    ) -> io::Result<PeerStream> {
        let Some(tls) = tls else {
            return Ok(PeerStream::Plain(stream));
        };
        stream
            .set_read_timeout(Some(timeout))
            .map_err(io::Error::from)?;
        let stream = futures_rustls::TlsAcceptor::from(tls.config())
            .accept(stream)
            .await?;
        Ok(PeerStream::Tls(Box::new(stream.into())))
    }

    fn socket(&self) -> &TcpStream {
        match self {
            PeerStream::Plain(stream) => stream,
            PeerStream::Tls(stream) => stream.get_ref().0,
        }
    }

    /// See glommio's `TcpStream::set_read_timeout`.
    pub(crate) fn set_read_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket()
            .set_read_timeout(timeout)
            .map_err(io::Error::from)
    }

    /// See glommio's `TcpStream::set_write_timeout`.
    pub(crate) fn set_write_timeout(&self, timeout: Option<Duration>) -> io::Result<()> {
        self.socket()
            .set_write_timeout(timeout)
            .map_err(io::Error::from)
    }
}

impl AsyncRead for PeerStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut [u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(stream) => Pin::new(stream).poll_read(cx, buf),
            PeerStream::Tls(stream) => Pin::new(stream.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for PeerStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            PeerStream::Plain(stream) => Pin::new(stream).poll_write(cx, buf),
            PeerStream::Tls(stream) => Pin::new(stream.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(stream) => Pin::new(stream).poll_flush(cx),
            PeerStream::Tls(stream) => Pin::new(stream.as_mut()).poll_flush(cx),
        }
    }

    fn poll_close(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            PeerStream::Plain(stream) => Pin::new(stream).poll_close(cx),
            PeerStream::Tls(stream) => Pin::new(stream.as_mut()).poll_close(cx),
        }
    }
}

/// The peer port's TLS, shared by the cores; `None` is plain TCP.
pub(crate) type PeerTls = Option<Arc<ServerTls>>;
