//! Listening sockets for the client and peer ports.
//!
//! glommio's `TcpListener::bind` sets SO_REUSEPORT (every core accepts on
//! the shared client port) but not SO_REUSEADDR. Without it, a port whose
//! last server (an etcd being replaced, a keel stopped with clients
//! connected) closed its connections first still has them in TIME_WAIT,
//! and the bind is refused for a minute: keel could not take over 2379
//! straight after etcd. Go's listeners, etcd's included, set SO_REUSEADDR
//! for the same reason.

use std::net::SocketAddr;
use std::os::fd::{FromRawFd, IntoRawFd};

use glommio::net::TcpListener;
use socket2::{Domain, Protocol, Socket, Type};

/// The backlog glommio's own bind gives.
const BACKLOG: i32 = 1024;

/// A listener on `address`, with SO_REUSEADDR and SO_REUSEPORT, for the
/// executor this runs on.
#[allow(unsafe_code)] // from_raw_fd: glommio has no other way to take a socket made here
pub(crate) fn listen(address: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = Socket::new(
        Domain::for_address(address),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&address.into())?;
    socket.listen(BACKLOG)?;
    // SAFETY: the descriptor is a listening TCP socket made above and
    // owned by nothing else; the listener takes it whole.
    Ok(unsafe { TcpListener::from_raw_fd(socket.into_raw_fd()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    /// A port whose last server closed a connection first: the server's
    /// end stays in TIME_WAIT. Its listener set SO_REUSEADDR, as Go's do.
    fn port_left_in_time_wait() -> SocketAddr {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
        socket.set_reuse_address(true).unwrap();
        socket
            .bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
            .unwrap();
        socket.listen(8).unwrap();
        let listener: std::net::TcpListener = socket.into();
        let address = listener.local_addr().unwrap();
        let mut client = std::net::TcpStream::connect(address).unwrap();
        let (served, _) = listener.accept().unwrap();
        drop(served);
        let mut rest = Vec::new();
        client.read_to_end(&mut rest).unwrap();
        drop(client);
        drop(listener);
        address
    }

    #[test]
    fn a_port_left_in_time_wait_by_another_server_is_taken_at_once() {
        let address = port_left_in_time_wait();
        let bound = glommio::LocalExecutorBuilder::default()
            .io_memory(1 << 20)
            .spawn(move || async move { listen(address).map(|l| l.local_addr().ok()) })
            .unwrap()
            .join()
            .unwrap();
        assert_eq!(bound.unwrap(), Some(address));
    }
}
