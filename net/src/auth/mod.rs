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

pub mod jwt;
pub mod key_set;
pub mod login_pool;
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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// How long a simple token works after its login (`--auth-token-ttl`).
    pub token_ttl: Duration,
    /// bcrypt's cost for new passwords (`--bcrypt-cost`, 4 to 31).
    pub bcrypt_cost: u32,
    /// etcd's `--auth-token`: `simple`, or `jwt,pub-key=...,priv-key=...,
    /// sign-method=...[,ttl=...]` (`jwt.rs`).
    pub token: String,
}

/// etcd's defaults: simple tokens of 300 s, bcrypt cost 10.
impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            token_ttl: Duration::from_secs(300),
            bcrypt_cost: 10,
            token: "simple".to_string(),
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
    keys: HashMap<String, Arc<UserKeys>>,
    /// JWT keys, with `--auth-token jwt,...`.
    jwt: Option<Arc<jwt::JwtKeys>>,
    /// Why nothing can be checked against it: the member has not read its
    /// record yet, or cannot decode it. Every request is then refused
    /// (auth fails closed).
    unavailable: Option<String>,
}

impl Compiled {
    fn new(revision: u64, state: AuthState, jwt: Option<Arc<jwt::JwtKeys>>) -> Compiled {
        let keys = state
            .users
            .keys()
            .map(|name| (name.clone(), Arc::new(UserKeys::of(&state, name))))
            .collect();
        Compiled {
            revision,
            state,
            keys,
            jwt,
            unavailable: None,
        }
    }

    /// Whether nothing can be checked against it (`unavailable`).
    pub fn is_unavailable(&self) -> bool {
        self.unavailable.is_some()
    }

    /// A record nothing can be checked against, and why.
    fn unavailable(revision: u64, why: String) -> Compiled {
        Compiled {
            revision,
            unavailable: Some(why),
            ..Compiled::default()
        }
    }

    /// Whether requests are checked (also when nothing can be checked:
    /// every request is then refused).
    pub fn enabled(&self) -> bool {
        self.state.enabled || self.unavailable.is_some()
    }

    /// Who `credential` is.
    ///
    /// # Errors
    /// With auth on: no credential ([`AuthError::UserEmpty`]), a token
    /// that is not valid now ([`AuthError::InvalidToken`]: forged, expired,
    /// its user deleted or given a new password, auth disabled since), or
    /// a common name that is no user ([`AuthError::PermissionDenied`]).
    pub fn admit(&self, credential: Credential<'_>) -> Result<Caller, AuthError> {
        self.admit_until(credential).map(|(caller, _)| caller)
    }

    /// [`Compiled::admit`], and until when (milliseconds since the Unix
    /// epoch) the answer holds for this record: a token's expiry.
    ///
    /// # Errors
    /// As [`Compiled::admit`].
    pub fn admit_until(&self, credential: Credential<'_>) -> Result<(Caller, u64), AuthError> {
        if let Some(why) = &self.unavailable {
            return Err(AuthError::Unavailable(why.clone()));
        }
        if !self.state.enabled {
            return Ok((Caller::Anyone, u64::MAX));
        }
        let (name, until) = match credential {
            Credential::Nobody => return Err(AuthError::UserEmpty),
            Credential::Token(token) if !token.starts_with(tokens::PREFIX) => {
                // A JWT (`--auth-token jwt`): etcd's rules, so that one
                // made before the latest auth change is refused as old.
                let jwt = self.jwt.as_ref().ok_or(AuthError::InvalidToken)?;
                let verified = jwt.verify(token).ok_or(AuthError::InvalidToken)?;
                if !self.state.users.contains_key(&verified.user) {
                    return Err(AuthError::InvalidToken);
                }
                if verified.revision < self.revision {
                    return Err(AuthError::OldRevision);
                }
                (verified.user, verified.expires_at_ms)
            }
            Credential::Token(token) => {
                let claims = tokens::verify(&self.state.token_secret, token)
                    .ok_or(AuthError::InvalidToken)?;
                let current = self.state.users.get(&claims.user);
                if claims.expires_at_ms <= tokens::now_ms()
                    || current.is_none_or(|user| user.epoch != claims.epoch)
                {
                    return Err(AuthError::InvalidToken);
                }
                (claims.user, claims.expires_at_ms)
            }
            Credential::CommonName(name) => {
                if !self.state.users.contains_key(name) {
                    return Err(AuthError::PermissionDenied);
                }
                (name.to_string(), u64::MAX)
            }
        };
        let caller = if self.state.is_root(&name) {
            Caller::Root(name)
        } else {
            Caller::User(name)
        };
        Ok((caller, until))
    }

    /// What `caller` may touch: `None` for anything (auth off, or root),
    /// else its keys (none for a user that is not there).
    pub fn keys_of(&self, caller: &Caller) -> Option<Arc<UserKeys>> {
        match caller {
            Caller::Anyone | Caller::Root(_) => None,
            Caller::User(name) => Some(self.keys.get(name).cloned().unwrap_or_default()),
        }
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
    settings: Arc<AuthSettings>,
    jwt: Option<Arc<jwt::JwtKeys>>,
    logins: login_pool::LoginPool,
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
    ///
    /// # Errors
    /// A `--auth-token` value or key file that cannot be used.
    pub fn new(view: AuthView, settings: AuthSettings) -> Result<Auth, String> {
        let jwt = jwt::JwtKeys::parse(&settings.token)?.map(Arc::new);
        Ok(Auth {
            view,
            compiled: Arc::new(ArcSwap::from_pointee(Compiled::default())),
            settings: Arc::new(settings),
            jwt,
            logins: login_pool::LoginPool::start(),
        })
    }

    /// The settings.
    pub fn settings(&self) -> &AuthSettings {
        &self.settings
    }

    /// A token for `name` if `password` is its password, checked on the
    /// login threads (`login_pool.rs`), from any runtime.
    ///
    /// # Errors
    /// As [`authenticate`]; [`AuthError::Unavailable`] when too many
    /// logins wait.
    pub async fn log_in(&self, name: String, password: String) -> Result<String, AuthError> {
        let (compiled, auth) = (self.current(), self.clone());
        self.logins
            .run(move || {
                authenticate(
                    &compiled,
                    auth.settings(),
                    &name,
                    &password,
                    password_matches_blocking,
                )
            })
            .await?
    }

    /// `password` hashed for a new user or a new password, on the login
    /// threads.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] if hashing fails or too many wait.
    pub async fn hash_password(&self, password: String) -> Result<String, AuthError> {
        let cost = self.settings.bcrypt_cost;
        self.logins
            .run(move || hash_password_blocking(&password, cost))
            .await?
    }

    /// The auth revision this member follows: cheap (no contention), for
    /// callers that keep a compiled record and check it is still current.
    pub fn revision(&self) -> u64 {
        self.view.revision()
    }

    /// Whether auth is off for good reason: this member read its record,
    /// and no auth change was ever made (the common case, checked first
    /// on every request).
    pub fn never_set_up(&self) -> bool {
        // Known first: its acquire makes the revision it published seen.
        self.view.is_known() && self.view.revision() == 0
    }

    /// The record as this member follows it now, compiled: two atomic
    /// loads, unless it changed since the last call (then compiled once).
    pub fn current(&self) -> Arc<Compiled> {
        if !self.view.is_known() {
            return Arc::new(Compiled::unavailable(
                0,
                "this member has not read its auth record yet (its shard 0 is not serving)"
                    .to_string(),
            ));
        }
        let compiled = self.compiled.load_full();
        let record = self.view.load();
        if record.revision == compiled.revision {
            return compiled;
        }
        let fresh = match AuthState::decode(&record.state) {
            Ok(state) => Compiled::new(record.revision, state, self.jwt.clone()),
            Err(error) => {
                // Written through Raft by a server of another format, or
                // damaged: nothing is checked against it, and every
                // request is refused until a record that reads comes.
                tracing::error!(%error, revision = record.revision, "the auth record cannot be read");
                Compiled::unavailable(
                    record.revision,
                    format!("the auth record cannot be read: {error}"),
                )
            }
        };
        let fresh = Arc::new(fresh);
        self.compiled.store(fresh.clone());
        fresh
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

/// A token for `name` if `password` is its password, under the record
/// `compiled` (run it off the async threads: `check` is bcrypt): a JWT
/// with `--auth-token jwt`, else a simple token.
///
/// # Errors
/// [`AuthError::NotEnabled`] with auth off; [`AuthError::AuthFailed`] for
/// an unknown user, a user without a password, or a wrong one.
pub fn authenticate(
    compiled: &Compiled,
    settings: &AuthSettings,
    name: &str,
    password: &str,
    check: impl FnOnce(&str, &str) -> bool,
) -> Result<String, AuthError> {
    if let Some(why) = &compiled.unavailable {
        return Err(AuthError::Unavailable(why.clone()));
    }
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
    if let Some(jwt) = &compiled.jwt {
        return jwt.mint(name, compiled.revision);
    }
    let ttl = u64::try_from(settings.token_ttl.as_millis()).unwrap_or(u64::MAX);
    let claims = tokens::Claims {
        user: name.to_string(),
        epoch: user.epoch,
        expires_at_ms: tokens::now_ms().saturating_add(ttl),
    };
    tokens::mint(&compiled.state.token_secret, &claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_member_that_has_not_read_its_record_refuses_everyone() {
        // A fresh view: its shard 0 has not replayed (or cannot). Auth
        // might be on in the cluster: nothing is let through.
        let auth = Auth::new(AuthView::default(), AuthSettings::default()).unwrap();
        assert!(!auth.never_set_up());
        let compiled = auth.current();
        assert!(compiled.enabled());
        for credential in [
            Credential::Nobody,
            Credential::CommonName("root"),
            Credential::Token("keel1.x.y"),
        ] {
            assert!(
                matches!(compiled.admit(credential), Err(AuthError::Unavailable(_))),
                "{credential:?}"
            );
        }
    }
}
