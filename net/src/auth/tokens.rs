//! Simple tokens (docs/security.md, "Tokens"): what Authenticate hands a
//! client, and every later call carries (gRPC metadata `token`, as etcd's
//! clients send it). A token names its user, the user's epoch and when it
//! expires, signed with HMAC-SHA256 under the cluster's token secret (in
//! the auth record, so every member checks it without asking another).
//!
//! A token stops working when it expires, when its user is deleted or
//! given a new password (its epoch moves), and when auth is disabled (the
//! secret goes). A role change needs no new token: each check reads the
//! roles as they are now, as etcd's simple tokens do.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use ring::hmac;

use crate::auth::AuthError;

/// What every simple token starts with (and its format's version).
pub const PREFIX: &str = "keel1.";
/// Random bytes in each token, so that two logins never give one token.
const NONCE_BYTES: usize = 8;

/// What a valid signature vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// The user.
    pub user: String,
    /// The user's epoch when it logged in.
    pub epoch: u64,
    /// Milliseconds since the Unix epoch after which it is refused.
    pub expires_at_ms: u64,
}

/// `n` bytes from the system's secure random source.
///
/// # Errors
/// [`AuthError::Unavailable`] if it fails.
pub fn random_bytes(n: usize) -> Result<Vec<u8>, AuthError> {
    use ring::rand::SecureRandom;
    let mut bytes = vec![0u8; n];
    ring::rand::SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| AuthError::Unavailable("no secure random bytes".to_string()))?;
    Ok(bytes)
}

/// A token for `claims`, signed with `secret`.
///
/// # Errors
/// [`AuthError::Unavailable`] without random bytes for its nonce.
pub fn mint(secret: &[u8], claims: &Claims) -> Result<String, AuthError> {
    let mut payload = Vec::with_capacity(16 + NONCE_BYTES + claims.user.len());
    payload.extend_from_slice(&claims.epoch.to_le_bytes());
    payload.extend_from_slice(&claims.expires_at_ms.to_le_bytes());
    payload.extend_from_slice(&random_bytes(NONCE_BYTES)?);
    payload.extend_from_slice(claims.user.as_bytes());
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, secret), &payload);
    Ok(format!(
        "{PREFIX}{}.{}",
        URL_SAFE_NO_PAD.encode(&payload),
        URL_SAFE_NO_PAD.encode(tag.as_ref())
    ))
}

/// The claims of `token` if `secret` signed it; says nothing of expiry or
/// epoch, which the caller checks against the time and the record.
pub fn verify(secret: &[u8], token: &str) -> Option<Claims> {
    if secret.is_empty() {
        return None;
    }
    let (payload, tag) = token.strip_prefix(PREFIX)?.split_once('.')?;
    let payload = URL_SAFE_NO_PAD.decode(payload).ok()?;
    let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, secret), &payload, &tag).ok()?;
    let (epoch, rest) = payload.split_first_chunk::<8>()?;
    let (expires, rest) = rest.split_first_chunk::<8>()?;
    let user = rest.get(NONCE_BYTES..)?;
    Some(Claims {
        user: String::from_utf8(user.to_vec()).ok()?,
        epoch: u64::from_le_bytes(*epoch),
        expires_at_ms: u64::from_le_bytes(*expires),
    })
}

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            user: "alice".into(),
            epoch: 7,
            expires_at_ms: 1_000,
        }
    }

    #[test]
    fn a_token_verifies_under_its_secret_only() {
        let token = mint(b"secret", &claims()).unwrap();
        assert_eq!(verify(b"secret", &token), Some(claims()));
        assert_eq!(verify(b"another", &token), None);
        assert_eq!(verify(b"", &token), None);
        assert_ne!(
            token,
            mint(b"secret", &claims()).unwrap(),
            "two logins, one token"
        );
    }

    #[test]
    fn a_changed_token_is_refused() {
        let token = mint(b"secret", &claims()).unwrap();
        for at in PREFIX.len()..token.len() {
            let mut changed = token.clone().into_bytes();
            changed[at] = if changed[at] == b'A' { b'B' } else { b'A' };
            let changed = String::from_utf8(changed).unwrap();
            if changed != token {
                assert_eq!(verify(b"secret", &changed), None, "changed at {at}");
            }
        }
        assert_eq!(verify(b"secret", "keel1."), None);
        assert_eq!(
            verify(b"secret", "abcdefghijklmnop.12"),
            None,
            "etcd's shape"
        );
    }
}
