//! keel's network layer.
//!
//! Empty for now: the flatbuffers protocol, the server, the peer transport,
//! the client crate and `keelctl` land here (issue 6).
