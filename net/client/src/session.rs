//! A client's user (docs/security.md, "Auth"): with credentials, the
//! client logs in once (`Authenticate`, which costs the server a bcrypt
//! check) and presents the token on every connection it opens
//! (`UseToken`, before the connection's first call). When a call is
//! refused as unauthenticated (the token expired, or the user's password
//! changed), the token is dropped, the next connection logs in again,
//! and the call is tried once more.

use std::sync::atomic::{AtomicU64, Ordering};

use keel_proto::{ErrorCode, Request, ResponseBody};
use tokio::sync::Mutex;

use crate::connection::Connection;
use crate::error::{Error, Result};

/// A user's name and password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The user.
    pub user: String,
    /// Its password.
    pub password: String,
}

/// Request ids of the calls a connection makes before it is used (no
/// other call is on it then).
const AUTHENTICATE_ID: u64 = u64::MAX - 1;
const USE_TOKEN_ID: u64 = u64::MAX - 2;

/// The token every connection of a client presents.
#[derive(Debug, Default)]
pub(crate) struct Session {
    credentials: Option<Credentials>,
    /// The token, and the generation it belongs to; `None` until logged
    /// in, and after it was found stale.
    token: Mutex<Option<(u64, String)>>,
    /// Bumped by each login.
    generation: AtomicU64,
}

impl Session {
    pub(crate) fn new(credentials: Option<Credentials>) -> Session {
        Session {
            credentials,
            ..Session::default()
        }
    }

    /// Whether the client has a user.
    pub(crate) fn has_user(&self) -> bool {
        self.credentials.is_some()
    }

    /// Makes `connection` the user's (nothing without credentials):
    /// logs in through it if there is no token yet, then presents the
    /// token; answers the token's generation.
    ///
    /// # Errors
    /// [`Error::Server`] with the server's refusal (a wrong password:
    /// `AuthFailed`).
    pub(crate) async fn prepare(&self, connection: &Connection) -> Result<u64> {
        let Some(credentials) = &self.credentials else {
            return Ok(0);
        };
        for _ in 0..2 {
            // Auth off: no token is needed (and none is kept, so that the
            // next connection asks again, should auth come on).
            let Some((generation, token)) = self.token(connection, credentials).await? else {
                return Ok(0);
            };
            let answer = connection
                .call(USE_TOKEN_ID, &Request::UseToken { token })
                .await?;
            match answer.body {
                ResponseBody::UseToken => return Ok(generation),
                ResponseBody::Error(body) if body.code == ErrorCode::Unauthenticated => {
                    self.expire(generation).await;
                }
                ResponseBody::Error(body) => return Err(Error::from(body)),
                _ => {
                    return Err(Error::Protocol(
                        "an answer to UseToken of another kind".into(),
                    ))
                }
            }
        }
        Err(Error::Protocol(
            "the server refused a token it had just given".into(),
        ))
    }

    /// The current token, logging in through `connection` if there is
    /// none; `None` when the cluster has auth off.
    async fn token(
        &self,
        connection: &Connection,
        credentials: &Credentials,
    ) -> Result<Option<(u64, String)>> {
        let mut held = self.token.lock().await;
        if let Some(token) = held.as_ref() {
            return Ok(Some(token.clone()));
        }
        let login = Request::Authenticate {
            name: credentials.user.clone(),
            password: credentials.password.clone(),
        };
        let answer = connection.call(AUTHENTICATE_ID, &login).await?;
        let token = match answer.body {
            ResponseBody::Authenticate { token } => token,
            ResponseBody::Error(body) if body.code == ErrorCode::AuthNotEnabled => return Ok(None),
            ResponseBody::Error(body) => return Err(Error::from(body)),
            _ => {
                return Err(Error::Protocol(
                    "an answer to Authenticate of another kind".into(),
                ))
            }
        };
        let generation = self.generation.fetch_add(1, Ordering::AcqRel) + 1;
        *held = Some((generation, token.clone()));
        Ok(Some((generation, token)))
    }

    /// The token of `generation` was refused: the next connection logs in
    /// again (unless a newer login happened meanwhile).
    pub(crate) async fn expire(&self, generation: u64) {
        let mut held = self.token.lock().await;
        if held.as_ref().is_some_and(|(g, _)| *g == generation) {
            *held = None;
        }
    }
}
