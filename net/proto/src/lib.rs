//! keel's client protocol (`net/PROTOCOL.md`): the flatbuffers schema in
//! `schema/keel.fbs`, the Rust code `flatc` generates from it (committed in
//! `src/generated/`), and the framing: a `u32` little-endian length, then
//! one flatbuffer, verified before use.
//!
//! Applications and the server work with the plain values of [`types`];
//! [`codec`] turns them into flatbuffers and back, verifying on the way in.
//! [`routing`] is the key-to-shard function the shard-aware client uses.
//!
//! This crate depends on nothing of keel's engine or runtime, so that the
//! client crate (tokio) can use it.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

pub mod codec;
mod frame;
pub mod types;

/// The code `flatc` generates from `schema/keel.fbs`; do not edit.
#[allow(
    unsafe_code,
    missing_docs,
    clippy::all,
    clippy::pedantic,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    deprecated,
    non_camel_case_types,
    unused_imports
)]
#[rustfmt::skip]
mod generated {
    include!("generated/keel_generated.rs");
}

pub use codec::{
    decode_request, decode_response, encode_request, encode_request_frame, encode_response,
    encode_response_frame_within, response_size_hint, DecodeError,
};
pub use frame::{
    encode_frame, encode_frame_within, Frame, FrameDecoder, FrameError, FRAME_HEADER_LEN,
    MAX_FRAME_LEN, MAX_NESTING, MAX_RESPONSE_FRAME_LEN,
};
pub use keel_routing as routing;
pub use types::*;

/// The flatbuffers tables `flatc` generates, for code that builds or reads
/// frames by hand (tests of the server's handling of odd messages).
pub mod fb {
    pub use crate::generated::keel::proto::*;
}
