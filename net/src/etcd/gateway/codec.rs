//! The gateway's bytes: requests decoded from the protobuf JSON mapping
//! (pbjson: int64 as strings or numbers, bytes as base64, the .proto's
//! field names or their camel case), answers encoded as grpc-gateway v1
//! encodes them for etcd (the .proto's field names, defaults left out),
//! and errors in its shapes.

use std::convert::Infallible;
use std::pin::Pin;

use axum::body::{Body, Bytes};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Code, Status};

use super::framing::{Framed, Framer};

/// The largest request body, and the most a streamed body may hold
/// undecoded: room for keel's largest request (1.5 MiB) in base64.
pub(crate) const MAX_BODY_BYTES: usize = 4 << 20;

/// One request message from a whole body; an empty body is the empty
/// message, as in grpc-gateway.
pub(crate) fn decode<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, Status> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body).map_err(|error| Status::invalid_argument(error.to_string()))
}

/// A streaming call's request messages, decoded from its body.
pub(crate) type Decoded<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A body of JSON request messages, one after another (a streaming call's
/// requests), decoded as they arrive: each is parsed once it is whole
/// ([`Framer`]). A message that does not decode ends the stream with its
/// error; so does a body that ends inside one, and more than
/// [`MAX_BODY_BYTES`] waiting undecoded.
pub(crate) fn decode_stream<T: DeserializeOwned + Send + 'static>(body: Body) -> Decoded<T> {
    struct State {
        chunks: axum::body::BodyDataStream,
        buffered: Vec<u8>,
        /// Bytes of `buffered` already decoded: dropped once per chunk, so
        /// the bytes left are moved once a chunk, not once a message.
        consumed: usize,
        framer: Framer,
        ended: bool,
        failed: bool,
    }
    let state = State {
        chunks: body.into_data_stream(),
        buffered: Vec::new(),
        consumed: 0,
        framer: Framer::default(),
        ended: false,
        failed: false,
    };
    Box::pin(futures_util::stream::unfold(
        state,
        |mut state| async move {
            if state.failed {
                return None;
            }
            loop {
                let rest = state.buffered.get(state.consumed..).unwrap_or_default();
                let refused = match state.framer.scan(rest) {
                    Framed::Complete(end) => {
                        let message = rest.get(..end).unwrap_or_default();
                        let parsed = serde_json::from_slice::<T>(message);
                        state.consumed += end;
                        match parsed {
                            Ok(message) => return Some((Ok(message), state)),
                            Err(error) => Some(error.to_string()),
                        }
                    }
                    Framed::NotAnObject => Some("a request message must be a JSON object".into()),
                    Framed::Incomplete if state.ended => {
                        if rest.iter().all(u8::is_ascii_whitespace) {
                            return None;
                        }
                        Some("the body ends inside a request message".into())
                    }
                    Framed::Incomplete if rest.len() > MAX_BODY_BYTES => {
                        Some(format!("a request message over {MAX_BODY_BYTES} bytes"))
                    }
                    Framed::Incomplete => None,
                };
                if let Some(refused) = refused {
                    state.failed = true;
                    return Some((Err(Status::invalid_argument(refused)), state));
                }
                match state.chunks.next().await {
                    Some(Ok(chunk)) => {
                        state.buffered.drain(..state.consumed);
                        state.consumed = 0;
                        state.buffered.extend_from_slice(&chunk);
                    }
                    Some(Err(_)) | None => state.ended = true,
                }
            }
        },
    ))
}

/// A unary answer: the message itself.
pub(crate) fn answer<T: Serialize>(message: &T) -> Response {
    match serde_json::to_vec(message) {
        Ok(body) => json(StatusCode::OK, body),
        Err(error) => refusal(&Status::internal(error.to_string())),
    }
}

/// A unary call's error as grpc-gateway v1 writes it (etcd 3.4 and 3.5):
/// `{"error": message, "code": grpc code, "message": message}` with the
/// HTTP status its code maps to.
pub(crate) fn refusal(status: &Status) -> Response {
    let body = serde_json::json!({
        "error": status.message(),
        "code": status.code() as i32,
        "message": status.message(),
    });
    json(http_status(status.code()), body.to_string().into_bytes())
}

/// A streamed answer: each message as `{"result": message}` on a line of
/// its own, one HTTP chunk each; an error as `{"error": {...}}`, after
/// which nothing more is sent.
pub(crate) fn stream<T, S>(answers: S) -> Response
where
    T: Serialize + Send + 'static,
    S: Stream<Item = Result<T, Status>> + Send + 'static,
{
    let lines = answers
        .scan(false, |ended, answer| {
            if *ended {
                return futures_util::future::ready(None);
            }
            *ended = answer.is_err();
            futures_util::future::ready(Some(line(answer)))
        })
        .map(|line| Ok::<_, Infallible>(Bytes::from(line)));
    (
        StatusCode::OK,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(lines),
    )
        .into_response()
}

fn line<T: Serialize>(answer: Result<T, Status>) -> Vec<u8> {
    let value = match answer.map(|message| serde_json::to_value(&message)) {
        Ok(Ok(message)) => serde_json::json!({ "result": message }),
        Ok(Err(error)) => stream_error(&Status::internal(error.to_string())),
        Err(status) => stream_error(&status),
    };
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    line
}

fn stream_error(status: &Status) -> serde_json::Value {
    let http = http_status(status.code());
    serde_json::json!({ "error": {
        "grpc_code": status.code() as i32,
        "http_code": http.as_u16(),
        "message": status.message(),
        "http_status": http.canonical_reason().unwrap_or(""),
    }})
}

fn json(status: StatusCode, body: Vec<u8>) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The HTTP status grpc-gateway v1 gives each gRPC code.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::Ok => StatusCode::OK,
        Code::Cancelled => StatusCode::REQUEST_TIMEOUT,
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::Aborted => StatusCode::CONFLICT,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::FailedPrecondition => StatusCode::PRECONDITION_FAILED,
        Code::Unimplemented => StatusCode::NOT_IMPLEMENTED,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::Unknown | Code::Internal | Code::DataLoss => StatusCode::INTERNAL_SERVER_ERROR,
    }
}
