//! keel's client protocol (`net/PROTOCOL.md`): the flatbuffers schema in
//! `schema/keel.fbs`, the Rust code `flatc` generates from it (committed in
//! `src/generated/`), and the framing: a `u32` little-endian length, then
//! one flatbuffer, verified before use.
//!
//! This crate depends on nothing of keel's engine or runtime, so that the
//! client crate (tokio) can use it.
#![cfg_attr(
    not(test),
    deny(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)
)]

mod frame;

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

pub use frame::{
    decode_request, decode_response, encode_frame, FrameDecoder, FrameError, FRAME_HEADER_LEN,
    MAX_FRAME_LEN, MAX_NESTING,
};
pub use generated::keel::proto::*;
