//! Who a call to etcd's API comes from (docs/security.md, "Auth"): the
//! token in its metadata (`token`, as etcd's clients send it, or
//! `authorization`, as etcd's JSON gateway takes it), else the common
//! name of its connection's verified client certificate.

use std::sync::Arc;

use tonic::{Request, Status};

pub(crate) use crate::auth::Identity;
use crate::auth::{Auth, Caller, Compiled, Credential};
use crate::etcd::errors::auth_status;

/// The common name of a connection's client certificate, when the port
/// requires and verified one (`--client-cert-auth`); carried by every
/// call of the connection.
#[derive(Debug, Clone, Default)]
pub(crate) struct PeerName(pub(crate) Option<Arc<str>>);

/// What `request` says of its caller.
pub(crate) fn credential<T>(request: &Request<T>) -> Credential<'_> {
    let metadata = request.metadata();
    let token = metadata
        .get("token")
        .or_else(|| metadata.get("authorization"))
        .and_then(|value| value.to_str().ok());
    if let Some(token) = token {
        return Credential::Token(token);
    }
    match request.extensions().get::<PeerName>() {
        Some(PeerName(Some(name))) => Credential::CommonName(name),
        _ => Credential::Nobody,
    }
}

/// Builds and carries [`Identity`]s (a stream's, whose every create is
/// checked against the record as it is then).
pub(crate) trait IdentityOf {
    /// `request`'s.
    fn of<T>(request: &Request<T>) -> Identity;
    /// A JSON gateway call's: its `Authorization` header (or `token`),
    /// else its connection's certificate.
    fn of_http(headers: &http::HeaderMap, name: Option<&PeerName>) -> Identity;
    /// Puts it on `request` as a gRPC call carries it.
    fn attach<T>(&self, request: &mut Request<T>);
}

impl IdentityOf for Identity {
    fn of<T>(request: &Request<T>) -> Identity {
        match credential(request) {
            Credential::Token(token) => Identity::Token(token.to_string()),
            Credential::CommonName(name) => Identity::CommonName(Arc::from(name)),
            Credential::Nobody => Identity::Nobody,
        }
    }

    fn of_http(headers: &http::HeaderMap, name: Option<&PeerName>) -> Identity {
        let token = headers
            .get(http::header::AUTHORIZATION)
            .or_else(|| headers.get("token"))
            .and_then(|value| value.to_str().ok());
        if let Some(token) = token {
            return Identity::Token(token.to_string());
        }
        match name {
            Some(PeerName(Some(name))) => Identity::CommonName(name.clone()),
            _ => Identity::Nobody,
        }
    }

    fn attach<T>(&self, request: &mut Request<T>) {
        match self {
            Identity::Token(token) => {
                if let Ok(value) = token.parse() {
                    request.metadata_mut().insert("token", value);
                }
            }
            Identity::CommonName(name) => {
                request
                    .extensions_mut()
                    .insert(PeerName(Some(name.clone())));
            }
            Identity::Nobody => {}
        }
    }
}

/// The record now and `request`'s caller.
///
/// # Errors
/// etcd's refusal when auth is on and the caller is not admitted.
pub(crate) fn admit<T>(
    auth: &Auth,
    request: &Request<T>,
) -> Result<(Arc<Compiled>, Caller), Status> {
    let compiled = auth.current();
    let caller = compiled
        .admit(credential(request))
        .map_err(|e| auth_status(&e))?;
    Ok((compiled, caller))
}
