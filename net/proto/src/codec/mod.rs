//! The plain messages of [`crate::types`] to and from flatbuffers.

mod decode;
mod encode;
mod size_hint;

pub use decode::{decode_request, decode_response};
pub use encode::{
    encode_request, encode_request_frame, encode_response, encode_response_frame_within,
};

/// About how many bytes `body` encodes to, inside its response frame: never
/// less, and at most about a quarter (and 1 KiB) more.
pub fn response_size_hint(body: &crate::types::ResponseBody) -> usize {
    size_hint::response_bytes(body)
}

/// A message that cannot be used. `id` is the request's (or response's)
/// id when the bytes verified far enough to carry one: the server answers
/// such a request with a `BadRequest` error instead of closing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// The message's id, when readable.
    pub id: Option<u64>,
    /// What is wrong.
    pub message: String,
}

#[cfg(test)]
mod tests;
