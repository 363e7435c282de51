//! etcd's `grpc_server_started_total` and `grpc_server_handled_total`
//! (go-grpc-prometheus' names and labels), counted around the etcd API
//! front's router: a call is started when its request arrives and handled
//! when its status is known, from the response's headers (an error
//! answered at once) or its trailers (after the last message). A call
//! dropped before its status went out (the client went away, before or
//! after the response began) is handled as `Canceled`.
//!
//! The front runs on one thread, so the counters are touched by one
//! thread only; they are atomics because a scrape reads them from another.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{HeaderMap, Request, Response};

/// How a method streams, as go-grpc-prometheus' `grpc_type` label says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CallType {
    Unary,
    ServerStream,
    BidiStream,
}

impl CallType {
    pub(crate) fn label(self) -> &'static str {
        match self {
            CallType::Unary => "unary",
            CallType::ServerStream => "server_stream",
            CallType::BidiStream => "bidi_stream",
        }
    }
}

/// Every method etcd's API front serves: `(service, method, type)`.
pub(crate) const METHODS: &[(&str, &str, CallType)] = &[
    ("etcdserverpb.KV", "Range", CallType::Unary),
    ("etcdserverpb.KV", "Put", CallType::Unary),
    ("etcdserverpb.KV", "DeleteRange", CallType::Unary),
    ("etcdserverpb.KV", "Txn", CallType::Unary),
    ("etcdserverpb.KV", "Compact", CallType::Unary),
    ("etcdserverpb.Watch", "Watch", CallType::BidiStream),
    ("etcdserverpb.Lease", "LeaseGrant", CallType::Unary),
    ("etcdserverpb.Lease", "LeaseRevoke", CallType::Unary),
    ("etcdserverpb.Lease", "LeaseKeepAlive", CallType::BidiStream),
    ("etcdserverpb.Lease", "LeaseTimeToLive", CallType::Unary),
    ("etcdserverpb.Lease", "LeaseLeases", CallType::Unary),
    ("etcdserverpb.Cluster", "MemberAdd", CallType::Unary),
    ("etcdserverpb.Cluster", "MemberRemove", CallType::Unary),
    ("etcdserverpb.Cluster", "MemberUpdate", CallType::Unary),
    ("etcdserverpb.Cluster", "MemberList", CallType::Unary),
    ("etcdserverpb.Cluster", "MemberPromote", CallType::Unary),
    ("etcdserverpb.Maintenance", "Alarm", CallType::Unary),
    ("etcdserverpb.Maintenance", "Status", CallType::Unary),
    ("etcdserverpb.Maintenance", "Defragment", CallType::Unary),
    ("etcdserverpb.Maintenance", "Hash", CallType::Unary),
    ("etcdserverpb.Maintenance", "HashKV", CallType::Unary),
    (
        "etcdserverpb.Maintenance",
        "Snapshot",
        CallType::ServerStream,
    ),
    ("etcdserverpb.Maintenance", "MoveLeader", CallType::Unary),
    ("etcdserverpb.Maintenance", "Downgrade", CallType::Unary),
    ("etcdserverpb.Auth", "AuthEnable", CallType::Unary),
    ("etcdserverpb.Auth", "AuthDisable", CallType::Unary),
    ("etcdserverpb.Auth", "AuthStatus", CallType::Unary),
    ("etcdserverpb.Auth", "Authenticate", CallType::Unary),
    ("etcdserverpb.Auth", "UserAdd", CallType::Unary),
    ("etcdserverpb.Auth", "UserGet", CallType::Unary),
    ("etcdserverpb.Auth", "UserList", CallType::Unary),
    ("etcdserverpb.Auth", "UserDelete", CallType::Unary),
    ("etcdserverpb.Auth", "UserChangePassword", CallType::Unary),
    ("etcdserverpb.Auth", "UserGrantRole", CallType::Unary),
    ("etcdserverpb.Auth", "UserRevokeRole", CallType::Unary),
    ("etcdserverpb.Auth", "RoleAdd", CallType::Unary),
    ("etcdserverpb.Auth", "RoleGet", CallType::Unary),
    ("etcdserverpb.Auth", "RoleList", CallType::Unary),
    ("etcdserverpb.Auth", "RoleDelete", CallType::Unary),
    ("etcdserverpb.Auth", "RoleGrantPermission", CallType::Unary),
    ("etcdserverpb.Auth", "RoleRevokePermission", CallType::Unary),
    ("v3electionpb.Election", "Campaign", CallType::Unary),
    ("v3electionpb.Election", "Proclaim", CallType::Unary),
    ("v3electionpb.Election", "Leader", CallType::Unary),
    ("v3electionpb.Election", "Observe", CallType::ServerStream),
    ("v3electionpb.Election", "Resign", CallType::Unary),
    ("v3lockpb.Lock", "Lock", CallType::Unary),
    ("v3lockpb.Lock", "Unlock", CallType::Unary),
];

/// gRPC's status codes by number, as go-grpc-prometheus names them.
pub(crate) const CODES: [&str; 17] = [
    "OK",
    "Canceled",
    "Unknown",
    "InvalidArgument",
    "DeadlineExceeded",
    "NotFound",
    "AlreadyExists",
    "PermissionDenied",
    "ResourceExhausted",
    "FailedPrecondition",
    "Aborted",
    "OutOfRange",
    "Unimplemented",
    "Internal",
    "Unavailable",
    "DataLoss",
    "Unauthenticated",
];

const CANCELED: usize = 1;
const UNKNOWN: usize = 2;

/// The front's call counts, by method (and code).
#[derive(Debug)]
pub struct GrpcCalls {
    /// Each method's index in [`METHODS`], by its request path: looked up
    /// once per call, on the front's hot path.
    paths: HashMap<String, usize>,
    started: Vec<AtomicU64>,
    /// `METHODS.len() * CODES.len()`, method-major.
    handled: Vec<AtomicU64>,
}

impl Default for GrpcCalls {
    fn default() -> GrpcCalls {
        GrpcCalls {
            paths: METHODS
                .iter()
                .enumerate()
                .map(|(i, (service, method, _))| (format!("/{service}/{method}"), i))
                .collect(),
            started: (0..METHODS.len()).map(|_| AtomicU64::new(0)).collect(),
            handled: (0..METHODS.len() * CODES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }
}

impl GrpcCalls {
    /// The method a request path (`/service/method`) names, if the front
    /// serves it.
    fn method_of(&self, path: &str) -> Option<usize> {
        self.paths.get(path).copied()
    }

    fn started(&self, method: usize) {
        if let Some(count) = self.started.get(method) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn handled(&self, method: usize, code: usize) {
        let code = if code < CODES.len() { code } else { UNKNOWN };
        if let Some(count) = self.handled.get(method * CODES.len() + code) {
            count.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Calls of `method` started so far.
    pub(crate) fn started_count(&self, method: usize) -> u64 {
        self.started
            .get(method)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Calls of `method` handled with `code` so far.
    pub(crate) fn handled_count(&self, method: usize, code: usize) -> u64 {
        self.handled
            .get(method * CODES.len() + code)
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }
}

/// The gRPC status code in `headers` (a response's or its trailers'), if
/// they carry one.
fn status_code(headers: &HeaderMap) -> Option<usize> {
    let value = headers.get("grpc-status")?;
    Some(value.to_str().ok()?.parse().unwrap_or(UNKNOWN))
}

/// A service that counts the gRPC calls through `inner`.
#[derive(Clone)]
pub(crate) struct CountCalls<S> {
    inner: S,
    calls: Arc<GrpcCalls>,
}

impl<S> CountCalls<S> {
    pub(crate) fn new(inner: S, calls: Arc<GrpcCalls>) -> CountCalls<S> {
        CountCalls { inner, calls }
    }
}

impl<S, RequestBody, B> tower::Service<Request<RequestBody>> for CountCalls<S>
where
    S: tower::Service<Request<RequestBody>, Response = Response<B>>,
{
    type Response = Response<CountedBody<B>>;
    type Error = S::Error;
    type Future = CountedCall<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<RequestBody>) -> Self::Future {
        let call = self.calls.method_of(request.uri().path()).map(|method| {
            self.calls.started(method);
            Handling {
                calls: self.calls.clone(),
                method,
            }
        });
        CountedCall {
            inner: self.inner.call(request),
            call,
        }
    }
}

/// A call whose status is not yet known.
struct Handling {
    calls: Arc<GrpcCalls>,
    method: usize,
}

impl Handling {
    fn handled(self, code: usize) {
        self.calls.handled(self.method, code);
    }
}

pin_project_lite::pin_project! {
    /// The inner service's future; its response's status is counted.
    pub(crate) struct CountedCall<F> {
        #[pin]
        inner: F,
        call: Option<Handling>,
    }

    impl<F> PinnedDrop for CountedCall<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its response: the client went away (a
            // deadline, a reset stream).
            if let Some(call) = this.project().call.take() {
                call.handled(CANCELED);
            }
        }
    }
}

impl<F, B, E> std::future::Future for CountedCall<F>
where
    F: std::future::Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<CountedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = match this.inner.poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Err(error)) => {
                if let Some(call) = this.call.take() {
                    call.handled(UNKNOWN);
                }
                return Poll::Ready(Err(error));
            }
            Poll::Ready(Ok(response)) => response,
        };
        let mut call = this.call.take();
        // An error answered at once carries its status in the headers.
        if let Some(code) = status_code(response.headers()) {
            if let Some(call) = call.take() {
                call.handled(code);
            }
        }
        Poll::Ready(Ok(response.map(|body| CountedBody { body, call })))
    }
}

pin_project_lite::pin_project! {
    /// A response body whose trailers say how its call ended.
    pub(crate) struct CountedBody<B> {
        #[pin]
        body: B,
        call: Option<Handling>,
    }

    impl<B> PinnedDrop for CountedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before its status went out: the client went away.
            if let Some(call) = this.project().call.take() {
                call.handled(CANCELED);
            }
        }
    }
}

impl<B: http_body::Body> http_body::Body for CountedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let polled = this.body.poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_code) {
                    if let Some(call) = this.call.take() {
                        call.handled(code);
                    }
                }
            }
            Poll::Ready(Some(Err(_))) => {
                if let Some(call) = this.call.take() {
                    call.handled(UNKNOWN);
                }
            }
            // Ended without a status: not gRPC's way to end a call.
            Poll::Ready(None) => {
                if let Some(call) = this.call.take() {
                    call.handled(UNKNOWN);
                }
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn a_path_names_its_method_and_nothing_else_does() {
        let calls = GrpcCalls::default();
        let range = calls.method_of("/etcdserverpb.KV/Range").unwrap();
        assert_eq!(METHODS[range].1, "Range");
        assert_eq!(calls.method_of("/etcdserverpb.KV/Nothing"), None);
        assert_eq!(calls.method_of("/v3/kv/range"), None);
        assert_eq!(calls.method_of(""), None);
    }

    #[test]
    fn an_unknown_code_counts_as_unknown() {
        let calls = GrpcCalls::default();
        calls.handled(0, 99);
        calls.handled(0, 5);
        assert_eq!(calls.handled_count(0, UNKNOWN), 1);
        assert_eq!(calls.handled_count(0, 5), 1);
    }
}
