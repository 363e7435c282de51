//! Speaking the client protocol over a plain socket, for tests that need
//! to see frames as the server sends them.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use keel_proto::{decode_response, encode_frame, encode_request, Request, Response};

use super::Server;

/// A connection to `server`'s client port with a 20 s read timeout.
pub fn connect(server: &Server) -> TcpStream {
    let stream = TcpStream::connect(server.client).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    stream
}

/// The next response, or `None` at a clean close.
pub fn read_response(stream: &mut TcpStream) -> Option<Response> {
    let mut header = [0u8; 4];
    if stream.read_exact(&mut header).is_err() {
        return None;
    }
    let mut body = vec![0; u32::from_le_bytes(header) as usize];
    stream.read_exact(&mut body).unwrap();
    Some(decode_response(&body).unwrap())
}

/// Sends `request` as `id`.
pub fn send(stream: &mut TcpStream, id: u64, request: &Request) {
    let frame = encode_frame(&encode_request(id, request)).unwrap();
    stream.write_all(&frame).unwrap();
}
