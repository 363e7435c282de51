//! JWT tokens, as etcd's `--auth-token jwt,pub-key=P,priv-key=K,
//! sign-method=M,ttl=T` (docs/security.md, "Tokens"): signed with the
//! operator's key, carrying etcd's claims `username`, `revision` (the auth
//! revision at login) and `exp`. A token made before the latest change to
//! the auth record is refused with etcd's "revision of auth store is old",
//! and clients log in again. A member given only the public key checks
//! tokens but makes none.

use std::path::PathBuf;
use std::time::Duration;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::auth::AuthError;

/// etcd's default lifetime of a JWT.
const DEFAULT_TTL: Duration = Duration::from_secs(300);

/// The keys and settings of JWT tokens.
pub struct JwtKeys {
    algorithm: Algorithm,
    /// `None` on a member that only checks tokens.
    encoding: Option<EncodingKey>,
    decoding: DecodingKey,
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("algorithm", &self.algorithm)
            .field("signs", &self.encoding.is_some())
            .field("ttl", &self.ttl)
            .finish()
    }
}

/// etcd's claims.
#[derive(Debug, Serialize, Deserialize)]
struct Claims {
    username: String,
    revision: u64,
    /// Seconds since the Unix epoch.
    exp: u64,
}

/// What a valid JWT says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The user.
    pub user: String,
    /// The auth revision at its login.
    pub revision: u64,
    /// When it expires, in ms since the Unix epoch.
    pub expires_at_ms: u64,
}

fn duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = text
        .find(|c: char| !c.is_ascii_digit())
        .map_or((text, "s"), |at| text.split_at(at));
    let number: u64 = number
        .parse()
        .map_err(|_| format!("ttl {text:?}: a number and a unit (such as 5m)"))?;
    let seconds = match unit {
        "s" => number,
        "m" => number.saturating_mul(60),
        "h" => number.saturating_mul(3600),
        other => return Err(format!("ttl {text:?}: unit {other:?} (s, m or h)")),
    };
    Ok(Duration::from_secs(seconds))
}

impl JwtKeys {
    /// The keys of etcd's `--auth-token` value `jwt,pub-key=P,priv-key=K,
    /// sign-method=M[,ttl=T]` (RS256/384/512, PS256/384/512,
    /// ES256/384, or HS256/384/512 with the private key file as its
    /// secret); `None` for `simple`.
    ///
    /// # Errors
    /// What is wrong with the value or the key files.
    pub fn parse(spec: &str) -> Result<Option<JwtKeys>, String> {
        let mut parts = spec.split(',');
        match parts.next() {
            Some("simple") | Some("") | None => return Ok(None),
            Some("jwt") => {}
            Some(other) => return Err(format!("--auth-token {other:?}: simple or jwt,...")),
        }
        let (mut public, mut private, mut method, mut ttl) = (None, None, None, DEFAULT_TTL);
        for part in parts {
            let (key, value) = part
                .split_once('=')
                .ok_or_else(|| format!("--auth-token: {part:?} is not key=value"))?;
            match key {
                "pub-key" => public = Some(PathBuf::from(value)),
                "priv-key" => private = Some(PathBuf::from(value)),
                "sign-method" => method = Some(value.to_string()),
                "ttl" => ttl = duration(value)?,
                other => return Err(format!("--auth-token: unknown option {other:?}")),
            }
        }
        let method = method.ok_or("--auth-token jwt needs sign-method=")?;
        let algorithm: Algorithm = method
            .parse()
            .map_err(|_| format!("--auth-token: unknown sign-method {method:?}"))?;
        let read = |path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("--auth-token: {}: {e}", path.display()))
        };
        let bad = |path: &PathBuf, e: jsonwebtoken::errors::Error| {
            format!("--auth-token: {}: {e}", path.display())
        };
        let (encoding, decoding) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                let path = private.ok_or("--auth-token: an HS method needs priv-key=")?;
                let secret = read(&path)?;
                (
                    Some(EncodingKey::from_secret(&secret)),
                    DecodingKey::from_secret(&secret),
                )
            }
            Algorithm::ES256 | Algorithm::ES384 => {
                let public = public.ok_or("--auth-token jwt needs pub-key=")?;
                let decoding =
                    DecodingKey::from_ec_pem(&read(&public)?).map_err(|e| bad(&public, e))?;
                let encoding = match &private {
                    Some(path) => {
                        Some(EncodingKey::from_ec_pem(&read(path)?).map_err(|e| bad(path, e))?)
                    }
                    None => None,
                };
                (encoding, decoding)
            }
            Algorithm::EdDSA => return Err("--auth-token: EdDSA is not etcd's".to_string()),
            _ => {
                let public = public.ok_or("--auth-token jwt needs pub-key=")?;
                let decoding =
                    DecodingKey::from_rsa_pem(&read(&public)?).map_err(|e| bad(&public, e))?;
                let encoding = match &private {
                    Some(path) => {
                        Some(EncodingKey::from_rsa_pem(&read(path)?).map_err(|e| bad(path, e))?)
                    }
                    None => None,
                };
                (encoding, decoding)
            }
        };
        Ok(Some(JwtKeys {
            algorithm,
            encoding,
            decoding,
            ttl,
        }))
    }

    /// A token for `user` at auth revision `revision`.
    ///
    /// # Errors
    /// [`AuthError::Unavailable`] on a member without the private key.
    pub fn mint(&self, user: &str, revision: u64) -> Result<String, AuthError> {
        let Some(encoding) = &self.encoding else {
            return Err(AuthError::Unavailable(
                "this member checks tokens but makes none (no priv-key)".to_string(),
            ));
        };
        let claims = Claims {
            username: user.to_string(),
            revision,
            exp: (crate::auth::tokens::now_ms() / 1000).saturating_add(self.ttl.as_secs()),
        };
        jsonwebtoken::encode(&Header::new(self.algorithm), &claims, encoding)
            .map_err(|e| AuthError::Unavailable(format!("cannot sign a token: {e}")))
    }

    /// What `token` says, if it is one of these keys' and not expired.
    pub fn verify(&self, token: &str) -> Option<Verified> {
        let mut validation = Validation::new(self.algorithm);
        validation.leeway = 0;
        validation.required_spec_claims = ["exp".to_string()].into();
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation).ok()?;
        Some(Verified {
            user: data.claims.username,
            revision: data.claims.revision,
            expires_at_ms: data.claims.exp.saturating_mul(1000),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(dir: &std::path::Path, method: &str, ttl: &str) -> JwtKeys {
        let secret = dir.join("secret");
        std::fs::write(&secret, b"a shared secret for HS256").unwrap();
        let spec = format!(
            "jwt,priv-key={},sign-method={method},ttl={ttl}",
            secret.display()
        );
        JwtKeys::parse(&spec).unwrap().unwrap()
    }

    #[test]
    fn a_token_carries_its_user_and_revision_and_verifies_only_under_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(dir.path(), "HS256", "5m");
        let token = keys.mint("alice", 7).unwrap();
        let verified = keys.verify(&token).unwrap();
        assert_eq!((verified.user.as_str(), verified.revision), ("alice", 7));
        let mut forged = token.clone();
        forged.push('x');
        assert_eq!(keys.verify(&forged), None);
        let other = dir.path().join("other");
        std::fs::write(&other, b"another secret").unwrap();
        let spec = format!("jwt,priv-key={},sign-method=HS256", other.display());
        let other = JwtKeys::parse(&spec).unwrap().unwrap();
        assert_eq!(other.verify(&token), None);
    }

    #[test]
    fn settings_are_etcds_and_bad_ones_are_refused() {
        assert!(JwtKeys::parse("simple").unwrap().is_none());
        assert!(
            JwtKeys::parse("jwt,sign-method=RS256").is_err(),
            "no pub-key"
        );
        assert!(JwtKeys::parse("jwt,pub-key=/nonexistent,sign-method=RS256").is_err());
        assert!(JwtKeys::parse("jwt,sign-method=XX1").is_err());
        assert!(JwtKeys::parse("opaque").is_err());
        assert_eq!(duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(duration("90"), Ok(Duration::from_secs(90)));
        assert!(duration("5d").is_err());
    }

    #[test]
    fn an_expired_token_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(dir.path(), "HS256", "0s");
        let token = keys.mint("alice", 1).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(keys.verify(&token), None);
    }
}
