//! Authentication and permissions with etcd's semantics (docs/security.md,
//! "Auth"): users with bcrypt-hashed passwords, roles with read, write or
//! readwrite permissions on keys, prefixes and ranges, a root user and
//! role that may do anything, `auth enable`/`disable`, tokens, and a
//! client certificate's common name as its user.
//!
//! The record lives in shard 0 (`Entry::Auth`); every member follows the
//! one its shard 0 applied, and checks each request against it *before*
//! proposing it (a check in apply would run on each member at its own
//! moment and could make replicas differ). So a request checked just
//! before a change to the record may still run under the old one, as in
//! etcd, whose checks also precede the proposal on its fast paths.

pub mod key_set;
pub mod ops;
pub mod record;
pub mod tokens;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use keel_engine::shard::AuthView;

use self::key_set::UserKeys;
use self::record::AuthState;

/// etcd's refusals, with etcd's texts (clients match on them).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Auth is on and the request names no user (no token, no certificate).
    #[error("etcdserver: user name is empty")]
    UserEmpty,
    /// A token that is forged, expired, or outlived its user, password or auth.
    #[error("etcdserver: invalid auth token")]
    InvalidToken,
    /// The user may not do this.
    #[error("etcdserver: permission denied")]
    PermissionDenied,
    /// A JWT made before the latest auth change.
    #[error("etcdserver: revision of auth store is old")]
    OldRevision,
    /// Authenticate while auth is off.
    #[error("etcdserver: authentication is not enabled")]
    NotEnabled,
    /// An unknown user or a wrong password.
    #[error("etcdserver: authentication failed, invalid user ID or password")]
    AuthFailed,
    /// UserAdd of a user that exists.
    #[error("etcdserver: user name already exists")]
    UserAlreadyExists,
    /// A call about a user that does not exist.
    #[error("etcdserver: user name not found")]
    UserNotFound,
    /// RoleAdd of a role that exists.
    #[error("etcdserver: role name already exists")]
    RoleAlreadyExists,
    /// A call about a role that does not exist.
    #[error("etcdserver: role name not found")]
    RoleNotFound,
    /// RoleAdd with no name.
    #[error("etcdserver: role name is empty")]
    RoleEmpty,
    /// Revoking a role the user does not have.
    #[error("etcdserver: role is not granted to the user")]
    RoleNotGranted,
    /// Revoking a permission the role does not have.
    #[error("etcdserver: permission is not granted to the role")]
    PermissionNotGranted,
    /// AuthEnable without a root user.
    #[error("etcdserver: root user does not exist")]
    RootUserMissing,
    /// AuthEnable with a root user that lacks the root role.
    #[error("etcdserver: root user does not have root role")]
    RootRoleMissing,
    /// Taking root apart (its user, its role, its grant) while auth is on.
    #[error("etcdserver: invalid auth management")]
    InvalidManagement,
    /// A permission of an unknown kind.
    #[error("etcdserver: invalid permission type")]
    InvalidPermission,
    /// The record could not be changed (the shard refused, or changes
    /// kept racing); the text says why.
    #[error("{0}")]
    Unavailable(String),
}

/// The server's auth settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthSettings {
    /// How long a token works after its login (`--auth-token-ttl`).
    pub token_ttl: Duration,
    /// bcrypt's cost for new passwords (`--bcrypt-cost`, 4 to 31).
    pub bcrypt_cost: u32,
}

/// etcd's defaults: 300 s tokens, bcrypt cost 10.
impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            token_ttl: Duration::from_secs(300),
            bcrypt_cost: 10,
        }
    }
}

/// Who a request says it comes from.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// A token from Authenticate (gRPC metadata `token`).
    Token(&'a str),
    /// The common name of the client's verified certificate
    /// (`--client-cert-auth`), used when the request has no token.
    CommonName(&'a str),
    /// Neither.
    Nobody,
}

/// What a connection or a stream says of its caller, owned.
#[derive(Debug, Clone, Default)]
pub enum Identity {
    /// A token from Authenticate.
    Token(String),
    /// The common name of the verified client certificate.
    CommonName(Arc<str>),
    /// Neither.
    #[default]
    Nobody,
}

impl Identity {
    /// As a credential to check.
    pub fn credential(&self) -> Credential<'_> {
        match self {
            Identity::Token(token) => Credential::Token(token),
            Identity::CommonName(name) => Credential::CommonName(name),
            Identity::Nobody => Credential::Nobody,
        }
    }
}

/// Who a request comes from, once admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// Auth is off: anyone may do anything.
    Anyone,
    /// A user with the root role.
    Root(String),
    /// Another user.
    User(String),
}

impl Caller {
    /// The user's name (none with auth off).
    pub fn name(&self) -> Option<&str> {
        match self {
            Caller::Anyone => None,
            Caller::Root(name) | Caller::User(name) => Some(name),
        }
    }
}

/// The record at one auth revision, ready for checks.
#[derive(Debug, Default)]
pub struct Compiled {
    /// Its auth revision.
    pub revision: u64,
    /// The record.
    pub state: AuthState,
    /// Every user's keys (root's are not needed).
    keys: HashMap<String, UserKeys>,
}

impl Compiled {
    fn new(revision: u64, state: AuthState) -> Compiled {
        let keys = state
            .users
            .keys()
            .map(|name| (name.clone(), UserKeys::of(&state, name)))
            .collect();
        Compiled {
            revision,
            state,
            keys,
        }
    }

    /// Whether requests are checked.
    pub fn enabled(&self) -> bool {
        self.state.enabled
    }

    /// Who `credential` is.
    ///
    /// # Errors
    /// With auth on: no credential ([`AuthError::UserEmpty`]), a token
    /// that is not valid now ([`AuthError::InvalidToken`]: forged, expired,
    /// its user deleted or given a new password, auth disabled since), or
    /// a common name that is no user ([`AuthError::PermissionDenied`]).
    pub fn admit(&self, credential: Credential<'_>) -> Result<Caller, AuthError> {
        if !self.state.enabled {
            return Ok(Caller::Anyone);
        }
        let name = match credential {
            Credential::Nobody => return Err(AuthError::UserEmpty),
            Credential::Token(token) => {
                let claims = tokens::verify(&self.state.token_secret, token)
                    .ok_or(AuthError::InvalidToken)?;
                let current = self.state.users.get(&claims.user);
                if claims.expires_at_ms <= tokens::now_ms()
                    || current.is_none_or(|user| user.epoch != claims.epoch)
                {
                    return Err(AuthError::InvalidToken);
                }
                claims.user
            }
            Credential::CommonName(name) => {
                if !self.state.users.contains_key(name) {
                    return Err(AuthError::PermissionDenied);
                }
                name.to_string()
            }
        };
        Ok(if self.state.is_root(&name) {
            Caller::Root(name)
        } else {
            Caller::User(name)
        })
    }

    /// Whether `caller` may read `[key, range_end)` (etcd's meanings).
    ///
    /// # Errors
    /// [`AuthError::PermissionDenied`].
    pub fn may_read(&self, caller: &Caller, key: &[u8], range_end: &[u8]) -> Result<(), AuthError> {
        self.may(caller, |keys| keys.read.covers(key, range_end))
    }

    /// Whether `caller` may write `[key, range_end)`.
    ///
    /// # Errors
    /// [`AuthError::PermissionDenied`].
    pub fn may_write(
        &self,
        caller: &Caller,
        key: &[u8],
        range_end: &[u8],
    ) -> Result<(), AuthError> {
        self.may(caller, |keys| keys.write.covers(key, range_end))
    }

    fn may(&self, caller: &Caller, allowed: impl Fn(&UserKeys) -> bool) -> Result<(), AuthError> {
        match caller {
            Caller::Anyone | Caller::Root(_) => Ok(()),
            Caller::User(name) => match self.keys.get(name) {
                Some(keys) if allowed(keys) => Ok(()),
                _ => Err(AuthError::PermissionDenied),
            },
        }
    }

    /// Whether `caller` may make admin calls (auth and member management,
    /// snapshots, hashes, defragmentation, alarms, compaction: etcd 3.6's
    /// list).
    ///
    /// # Errors
    /// [`AuthError::PermissionDenied`] for a user without the root role.
    pub fn may_administer(&self, caller: &Caller) -> Result<(), AuthError> {
        match caller {
            Caller::Anyone | Caller::Root(_) => Ok(()),
            Caller::User(_) => Err(AuthError::PermissionDenied),
        }
    }
}

/// A member's auth: the record it follows, compiled once per auth
/// revision, and the settings. Clones share it.
#[derive(Clone)]
pub struct Auth {
    view: AuthView,
    compiled: Arc<ArcSwap<Compiled>>,
    settings: AuthSettings,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Auth")
            .field("revision", &self.compiled.load().revision)
            .field("settings", &self.settings)
            .finish()
    }
}

impl Auth {
    /// The auth of a member that follows `view`.
    pub fn new(view: AuthView, settings: AuthSettings) -> Auth {
        Auth {
            view,
            compiled: Arc::new(ArcSwap::from_pointee(Compiled::default())),
            settings,
        }
    }

    /// The settings.
    pub fn settings(&self) -> AuthSettings {
        self.settings
    }

    /// The record as this member follows it now, compiled: two atomic
    /// loads, unless it changed since the last call (then compiled once).
    pub fn current(&self) -> Arc<Compiled> {
        let compiled = self.compiled.load_full();
        let record = self.view.load();
        if record.revision == compiled.revision {
            return compiled;
        }
        match AuthState::decode(&record.state) {
            Ok(state) => {
                let fresh = Arc::new(Compiled::new(record.revision, state));
                self.compiled.store(fresh.clone());
                fresh
            }
            Err(error) => {
                // Written through Raft by a server of this format: only a
                // defect gets here. The record before stays in force.
                tracing::error!(%error, revision = record.revision, "the auth record cannot be read");
                compiled
            }
        }
    }
}

/// A new user's password, hashed as etcd hashes it (bcrypt `$2a$`).
/// Slow on purpose (cost 10 takes tens of milliseconds): call it off the
/// async threads.
///
/// # Errors
/// [`AuthError::Unavailable`] if hashing fails.
pub fn hash_password_blocking(password: &str, cost: u32) -> Result<String, AuthError> {
    bcrypt::hash_with_result(password, cost)
        .map(|hashed| hashed.format_for_version(bcrypt::Version::TwoA))
        .map_err(|e| AuthError::Unavailable(format!("cannot hash the password: {e}")))
}

/// Whether `password` hashes to `hash` (bcrypt `$2a$`, `$2b$`, `$2y$`);
/// slow, as [`hash_password_blocking`].
pub fn password_matches_blocking(password: &str, hash: &str) -> bool {
    bcrypt::verify(password, hash).unwrap_or(false)
}

/// [`hash_password_blocking`] on tokio's blocking threads.
///
/// # Errors
/// [`AuthError::Unavailable`] if hashing fails.
pub async fn hash_password(password: String, cost: u32) -> Result<String, AuthError> {
    tokio::task::spawn_blocking(move || hash_password_blocking(&password, cost))
        .await
        .map_err(|e| AuthError::Unavailable(e.to_string()))?
}

/// A token for `name` if `password` is its password, under the record
/// `compiled` (run `check` off the async threads: it is bcrypt).
///
/// # Errors
/// [`AuthError::NotEnabled`] with auth off; [`AuthError::AuthFailed`] for
/// an unknown user, a user without a password, or a wrong one.
pub fn authenticate(
    compiled: &Compiled,
    settings: AuthSettings,
    name: &str,
    password: &str,
    check: impl FnOnce(&str, &str) -> bool,
) -> Result<String, AuthError> {
    if !compiled.enabled() {
        return Err(AuthError::NotEnabled);
    }
    let user = compiled
        .state
        .users
        .get(name)
        .ok_or(AuthError::AuthFailed)?;
    let hash = user.password_hash.as_deref().ok_or(AuthError::AuthFailed)?;
    if !check(password, hash) {
        return Err(AuthError::AuthFailed);
    }
    let ttl = u64::try_from(settings.token_ttl.as_millis()).unwrap_or(u64::MAX);
    let claims = tokens::Claims {
        user: name.to_string(),
        epoch: user.epoch,
        expires_at_ms: tokens::now_ms().saturating_add(ttl),
    };
    tokens::mint(&compiled.state.token_secret, &claims)
}
