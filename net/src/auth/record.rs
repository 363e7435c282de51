//! The auth record: users, roles, permissions and whether auth is on, as
//! shard 0 keeps it (opaque to the engine; net/PROTOCOL.md, "Auth
//! record"). Encoded whole, versioned and checked by a CRC-32: a record
//! that does not decode is refused, never half-read.

use std::collections::{BTreeMap, BTreeSet};

/// What a permission lets a role do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum PermissionKind {
    /// Range, watch, and the reads inside transactions.
    Read,
    /// Put, delete, and the writes inside transactions.
    Write,
    /// Both.
    ReadWrite,
}

impl PermissionKind {
    /// etcd's number for it (`authpb.Permission.Type`).
    pub fn etcd_number(self) -> i32 {
        match self {
            PermissionKind::Read => 0,
            PermissionKind::Write => 1,
            PermissionKind::ReadWrite => 2,
        }
    }

    /// From etcd's number.
    pub fn from_etcd(number: i32) -> Option<PermissionKind> {
        match number {
            0 => Some(PermissionKind::Read),
            1 => Some(PermissionKind::Write),
            2 => Some(PermissionKind::ReadWrite),
            _ => None,
        }
    }

    /// Whether it lets a role read.
    pub fn reads(self) -> bool {
        self != PermissionKind::Write
    }

    /// Whether it lets a role write.
    pub fn writes(self) -> bool {
        self != PermissionKind::Read
    }
}

/// One permission of a role: on `key` alone when `range_end` is empty, on
/// `[key, range_end)` otherwise, and on every key from `key` on when
/// `range_end` is `"\0"` (etcd's meanings).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Permission {
    /// The first key.
    pub key: Vec<u8>,
    /// The end, as above.
    pub range_end: Vec<u8>,
    /// What it allows.
    pub kind: PermissionKind,
}

/// A user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// The bcrypt hash of its password (`$2a$...`); `None` for a user
    /// made with `--no-password`, who is known only by its certificate's
    /// common name.
    pub password_hash: Option<String>,
    /// Its roles.
    pub roles: BTreeSet<String>,
    /// The auth revision of the change that made the user or last set its
    /// password: a token names it, and stops working once it differs (the
    /// user deleted, made again, or given a new password).
    pub epoch: u64,
}

/// A role: its permissions, in order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Role {
    /// Its permissions, sorted, each once.
    pub permissions: Vec<Permission>,
}

/// The name of the user and the role that may do anything.
pub const ROOT: &str = "root";

/// The whole auth record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuthState {
    /// Whether requests are checked.
    pub enabled: bool,
    /// The key that signs simple tokens: made when auth is enabled, gone
    /// when it is disabled (which invalidates every token).
    pub token_secret: Vec<u8>,
    /// Users by name.
    pub users: BTreeMap<String, User>,
    /// Roles by name (`root` need not be here: it exists implicitly).
    pub roles: BTreeMap<String, Role>,
}

const MAGIC: &[u8; 8] = b"KEELAUTH";
const VERSION: u8 = 1;
/// Bytes of the smallest user and role, for counts checked against what
/// is left.
const MIN_USER_BYTES: usize = 4 + 4 + 1 + 8 + 4;
const MIN_ROLE_BYTES: usize = 4 + 4;
const MIN_PERMISSION_BYTES: usize = 1 + 4 + 4;

/// A record that cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth record: {0}")]
pub struct RecordError(String);

impl AuthState {
    /// The record's bytes (net/PROTOCOL.md, "Auth record").
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(MAGIC);
        out.push(VERSION);
        out.push(u8::from(self.enabled));
        put_bytes(&mut out, &self.token_secret);
        put_u32(&mut out, self.users.len());
        for (name, user) in &self.users {
            put_bytes(&mut out, name.as_bytes());
            put_bytes(
                &mut out,
                user.password_hash.as_deref().unwrap_or_default().as_bytes(),
            );
            out.push(u8::from(user.password_hash.is_some()));
            out.extend_from_slice(&user.epoch.to_le_bytes());
            put_u32(&mut out, user.roles.len());
            for role in &user.roles {
                put_bytes(&mut out, role.as_bytes());
            }
        }
        put_u32(&mut out, self.roles.len());
        for (name, role) in &self.roles {
            put_bytes(&mut out, name.as_bytes());
            put_u32(&mut out, role.permissions.len());
            for permission in &role.permissions {
                out.push(match permission.kind {
                    PermissionKind::Read => 0,
                    PermissionKind::Write => 1,
                    PermissionKind::ReadWrite => 2,
                });
                put_bytes(&mut out, &permission.key);
                put_bytes(&mut out, &permission.range_end);
            }
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    /// The record `bytes` hold; empty bytes are the record before any
    /// change (auth off, nobody).
    ///
    /// # Errors
    /// [`RecordError`] for bytes that are not a whole record of this
    /// version.
    pub fn decode(bytes: &[u8]) -> Result<AuthState, RecordError> {
        if bytes.is_empty() {
            return Ok(AuthState::default());
        }
        let bad = |what: &str| RecordError(what.to_string());
        let (body, crc) = bytes
            .split_last_chunk::<4>()
            .ok_or_else(|| bad("too short"))?;
        if crc32fast::hash(body).to_le_bytes() != *crc {
            return Err(bad("fails its checksum"));
        }
        let mut input = Input(body);
        if input.take(MAGIC.len())? != MAGIC {
            return Err(bad("not an auth record"));
        }
        let version = input.u8()?;
        if version != VERSION {
            return Err(RecordError(format!("version {version}")));
        }
        let enabled = input.flag()?;
        let token_secret = input.bytes()?.to_vec();
        let mut users = BTreeMap::new();
        for _ in 0..input.count(MIN_USER_BYTES)? {
            let name = input.string()?;
            let hash = input.string()?;
            let has_password = input.flag()?;
            let epoch = input.u64()?;
            let mut roles = BTreeSet::new();
            for _ in 0..input.count(4)? {
                roles.insert(input.string()?);
            }
            let user = User {
                password_hash: has_password.then_some(hash),
                roles,
                epoch,
            };
            users.insert(name, user);
        }
        let mut roles = BTreeMap::new();
        for _ in 0..input.count(MIN_ROLE_BYTES)? {
            let name = input.string()?;
            let mut permissions = Vec::new();
            for _ in 0..input.count(MIN_PERMISSION_BYTES)? {
                let kind = match input.u8()? {
                    0 => PermissionKind::Read,
                    1 => PermissionKind::Write,
                    2 => PermissionKind::ReadWrite,
                    other => return Err(RecordError(format!("permission kind {other}"))),
                };
                permissions.push(Permission {
                    key: input.bytes()?.to_vec(),
                    range_end: input.bytes()?.to_vec(),
                    kind,
                });
            }
            roles.insert(name, Role { permissions });
        }
        if !input.0.is_empty() {
            return Err(bad("bytes after the record"));
        }
        Ok(AuthState {
            enabled,
            token_secret,
            users,
            roles,
        })
    }

    /// Whether `user` has the root role.
    pub fn is_root(&self, user: &str) -> bool {
        self.users.get(user).is_some_and(|u| u.roles.contains(ROOT))
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    out.extend_from_slice(&u32::try_from(n).unwrap_or(u32::MAX).to_le_bytes());
}

fn put_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    put_u32(out, bytes.len());
    out.extend_from_slice(bytes);
}

/// What is left of a record being read.
struct Input<'a>(&'a [u8]);

impl<'a> Input<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError("cut short".to_string()));
        }
        let (taken, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?.first().copied().unwrap_or_default())
    }

    fn flag(&mut self) -> Result<bool, RecordError> {
        match self.u8()? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(RecordError(format!("flag {other}"))),
        }
    }

    fn u32(&mut self) -> Result<u32, RecordError> {
        let mut word = [0u8; 4];
        word.copy_from_slice(self.take(4)?);
        Ok(u32::from_le_bytes(word))
    }

    fn u64(&mut self) -> Result<u64, RecordError> {
        let mut word = [0u8; 8];
        word.copy_from_slice(self.take(8)?);
        Ok(u64::from_le_bytes(word))
    }

    fn bytes(&mut self) -> Result<&'a [u8], RecordError> {
        let len = self.u32()? as usize;
        self.take(len)
    }

    fn string(&mut self) -> Result<String, RecordError> {
        String::from_utf8(self.bytes()?.to_vec())
            .map_err(|_| RecordError("a name is not UTF-8".to_string()))
    }

    /// A count of items of at least `min` bytes each, checked against
    /// what is left, so that a bad count cannot allocate much.
    fn count(&mut self, min: usize) -> Result<usize, RecordError> {
        let count = self.u32()? as usize;
        if count.saturating_mul(min) > self.0.len() {
            return Err(RecordError(format!(
                "{count} items in {} bytes",
                self.0.len()
            )));
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> AuthState {
        let mut state = AuthState {
            enabled: true,
            token_secret: vec![7; 32],
            ..AuthState::default()
        };
        state.users.insert(
            "alice".into(),
            User {
                password_hash: Some("$2a$04$abc".into()),
                roles: ["reader".to_string(), ROOT.to_string()].into(),
                epoch: 3,
            },
        );
        state.users.insert(
            "cn-only".into(),
            User {
                password_hash: None,
                roles: BTreeSet::new(),
                epoch: 4,
            },
        );
        state.roles.insert(
            "reader".into(),
            Role {
                permissions: vec![Permission {
                    key: b"/app/".to_vec(),
                    range_end: b"/app0".to_vec(),
                    kind: PermissionKind::Read,
                }],
            },
        );
        state
    }

    #[test]
    fn a_record_round_trips_and_empty_bytes_are_the_first_record() {
        let state = sample();
        assert_eq!(AuthState::decode(&state.encode()).unwrap(), state);
        assert_eq!(AuthState::decode(&[]).unwrap(), AuthState::default());
        assert!(state.is_root("alice"));
        assert!(!state.is_root("cn-only"));
    }

    #[test]
    fn a_damaged_or_cut_record_is_refused() {
        let bytes = sample().encode();
        for cut in 1..bytes.len() {
            assert!(AuthState::decode(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        for at in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[at] ^= 0x40;
            assert!(AuthState::decode(&damaged).is_err(), "flipped at {at}");
        }
    }
}
