//! etcd's auth management calls as changes to the auth record: each takes
//! the record as it is and answers the record after, or etcd's refusal.
//! Pure, so that the service can make a change again from a newer record
//! when another change came first (`Entry::Auth`'s base).

use crate::auth::record::{AuthState, Permission, PermissionKind, Role, User, ROOT};
use crate::auth::AuthError;

/// Bytes of the secret that signs tokens.
const SECRET_BYTES: usize = 32;

/// One management call, with etcd's names.
#[derive(Debug, Clone)]
pub enum Change {
    /// `UserAdd`.
    UserAdd {
        /// The user.
        name: String,
        /// Its password, already hashed; `None` for `--no-password`.
        password_hash: Option<String>,
    },
    /// `UserDelete`.
    UserDelete(String),
    /// `UserChangePassword`.
    UserChangePassword {
        /// The user.
        name: String,
        /// The new password, hashed.
        password_hash: String,
    },
    /// `UserGrantRole`.
    UserGrantRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// `UserRevokeRole`.
    UserRevokeRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// `RoleAdd`.
    RoleAdd(String),
    /// `RoleDelete` (also taken from every user that has it).
    RoleDelete(String),
    /// `RoleGrantPermission` (a permission on the same range is replaced).
    RoleGrantPermission {
        /// The role.
        role: String,
        /// What it may do.
        permission: Permission,
    },
    /// `RoleRevokePermission`.
    RoleRevokePermission {
        /// The role.
        role: String,
        /// The permission's key.
        key: Vec<u8>,
        /// And its range end.
        range_end: Vec<u8>,
    },
    /// `AuthEnable`.
    AuthEnable,
    /// `AuthDisable`.
    AuthDisable,
}

/// `state` after `change`, made at auth revision `revision` (the one the
/// change will get: users made or given a password take it as their
/// epoch). `Ok(None)`: nothing to change (etcd answers success).
///
/// # Errors
/// etcd's refusal; the record is as it was.
pub fn apply(
    state: &AuthState,
    change: &Change,
    revision: u64,
) -> Result<Option<AuthState>, AuthError> {
    let mut next = state.clone();
    match change {
        Change::UserAdd {
            name,
            password_hash,
        } => {
            if name.is_empty() {
                return Err(AuthError::UserEmpty);
            }
            if next.users.contains_key(name) {
                return Err(AuthError::UserAlreadyExists);
            }
            next.users.insert(
                name.clone(),
                User {
                    password_hash: password_hash.clone(),
                    roles: Default::default(),
                    epoch: revision,
                },
            );
        }
        Change::UserDelete(name) => {
            if next.enabled && name == ROOT {
                return Err(AuthError::InvalidManagement);
            }
            if next.users.remove(name).is_none() {
                return Err(AuthError::UserNotFound);
            }
        }
        Change::UserChangePassword {
            name,
            password_hash,
        } => {
            let user = next.users.get_mut(name).ok_or(AuthError::UserNotFound)?;
            user.password_hash = Some(password_hash.clone());
            user.epoch = revision;
        }
        Change::UserGrantRole { user, role } => {
            if role != ROOT && !next.roles.contains_key(role) {
                if !next.users.contains_key(user) {
                    return Err(AuthError::UserNotFound);
                }
                return Err(AuthError::RoleNotFound);
            }
            let user = next.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
            if !user.roles.insert(role.clone()) {
                return Ok(None);
            }
        }
        Change::UserRevokeRole { user, role } => {
            if next.enabled && user == ROOT && role == ROOT {
                return Err(AuthError::InvalidManagement);
            }
            let user = next.users.get_mut(user).ok_or(AuthError::UserNotFound)?;
            if !user.roles.remove(role) {
                return Err(AuthError::RoleNotGranted);
            }
        }
        Change::RoleAdd(name) => {
            if name.is_empty() {
                return Err(AuthError::RoleEmpty);
            }
            if next.roles.contains_key(name) {
                return Err(AuthError::RoleAlreadyExists);
            }
            next.roles.insert(name.clone(), Role::default());
        }
        Change::RoleDelete(name) => {
            if next.enabled && name == ROOT {
                return Err(AuthError::InvalidManagement);
            }
            if next.roles.remove(name).is_none() {
                return Err(AuthError::RoleNotFound);
            }
            for user in next.users.values_mut() {
                user.roles.remove(name);
            }
        }
        Change::RoleGrantPermission { role, permission } => {
            let role = next.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
            let same_range =
                |p: &Permission| p.key == permission.key && p.range_end == permission.range_end;
            match role.permissions.iter_mut().find(|p| same_range(p)) {
                Some(held) => held.kind = permission.kind,
                None => {
                    role.permissions.push(permission.clone());
                    role.permissions.sort();
                }
            }
        }
        Change::RoleRevokePermission {
            role,
            key,
            range_end,
        } => {
            let role = next.roles.get_mut(role).ok_or(AuthError::RoleNotFound)?;
            let before = role.permissions.len();
            role.permissions
                .retain(|p| !(p.key == *key && p.range_end == *range_end));
            if role.permissions.len() == before {
                return Err(AuthError::PermissionNotGranted);
            }
        }
        Change::AuthEnable => {
            if next.enabled {
                return Ok(None);
            }
            let root = next.users.get(ROOT).ok_or(AuthError::RootUserMissing)?;
            if !root.roles.contains(ROOT) {
                return Err(AuthError::RootRoleMissing);
            }
            next.enabled = true;
            next.token_secret = crate::auth::tokens::random_bytes(SECRET_BYTES)?;
        }
        Change::AuthDisable => {
            if !next.enabled {
                return Ok(None);
            }
            next.enabled = false;
            // Every token is signed with it: all stop working.
            next.token_secret.clear();
        }
    }
    Ok(Some(next))
}

/// A permission from etcd's fields.
///
/// # Errors
/// [`AuthError::InvalidPermission`] for an unknown kind.
pub fn permission(kind: i32, key: Vec<u8>, range_end: Vec<u8>) -> Result<Permission, AuthError> {
    Ok(Permission {
        key,
        range_end,
        kind: PermissionKind::from_etcd(kind).ok_or(AuthError::InvalidPermission)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(state: &AuthState, change: Change) -> Result<AuthState, AuthError> {
        apply(state, &change, 9).map(|next| next.unwrap_or_else(|| state.clone()))
    }

    fn with_root() -> AuthState {
        let state = run(
            &AuthState::default(),
            Change::UserAdd {
                name: ROOT.into(),
                password_hash: Some("h".into()),
            },
        )
        .unwrap();
        run(
            &state,
            Change::UserGrantRole {
                user: ROOT.into(),
                role: ROOT.into(),
            },
        )
        .unwrap()
    }

    #[test]
    fn auth_is_enabled_only_with_a_root_user_that_has_the_root_role() {
        let nobody = AuthState::default();
        assert_eq!(
            run(&nobody, Change::AuthEnable),
            Err(AuthError::RootUserMissing)
        );
        let bare_root = run(
            &nobody,
            Change::UserAdd {
                name: ROOT.into(),
                password_hash: None,
            },
        )
        .unwrap();
        assert_eq!(
            run(&bare_root, Change::AuthEnable),
            Err(AuthError::RootRoleMissing)
        );
        let enabled = run(&with_root(), Change::AuthEnable).unwrap();
        assert!(enabled.enabled);
        assert_eq!(enabled.token_secret.len(), SECRET_BYTES);
        // Root cannot be taken apart while auth is on.
        for change in [
            Change::UserDelete(ROOT.into()),
            Change::UserRevokeRole {
                user: ROOT.into(),
                role: ROOT.into(),
            },
            Change::RoleDelete(ROOT.into()),
        ] {
            assert_eq!(run(&enabled, change), Err(AuthError::InvalidManagement));
        }
        let disabled = run(&enabled, Change::AuthDisable).unwrap();
        assert!(!disabled.enabled);
        assert!(disabled.token_secret.is_empty(), "every token dies with it");
    }

    #[test]
    fn users_roles_and_permissions_follow_etcd_s_refusals() {
        let state = with_root();
        let add = |name: &str| Change::UserAdd {
            name: name.into(),
            password_hash: Some("h".into()),
        };
        assert_eq!(run(&state, add("")), Err(AuthError::UserEmpty));
        assert_eq!(run(&state, add(ROOT)), Err(AuthError::UserAlreadyExists));
        let state = run(&state, add("alice")).unwrap();
        assert_eq!(state.users["alice"].epoch, 9);
        let grant = |role: &str| Change::UserGrantRole {
            user: "alice".into(),
            role: role.into(),
        };
        assert_eq!(run(&state, grant("reader")), Err(AuthError::RoleNotFound));
        assert_eq!(
            run(&state, Change::RoleAdd(String::new())),
            Err(AuthError::RoleEmpty)
        );
        let state = run(&state, Change::RoleAdd("reader".into())).unwrap();
        assert_eq!(
            run(&state, Change::RoleAdd("reader".into())),
            Err(AuthError::RoleAlreadyExists)
        );
        let state = run(&state, grant("reader")).unwrap();
        assert!(
            apply(&state, &grant("reader"), 10).unwrap().is_none(),
            "granted twice"
        );
        let perm = permission(0, b"a".to_vec(), b"b".to_vec()).unwrap();
        let state = run(
            &state,
            Change::RoleGrantPermission {
                role: "reader".into(),
                permission: perm,
            },
        )
        .unwrap();
        // The same range again changes its kind, not the count.
        let state = run(
            &state,
            Change::RoleGrantPermission {
                role: "reader".into(),
                permission: permission(2, b"a".to_vec(), b"b".to_vec()).unwrap(),
            },
        )
        .unwrap();
        assert_eq!(state.roles["reader"].permissions.len(), 1);
        assert_eq!(
            state.roles["reader"].permissions[0].kind,
            PermissionKind::ReadWrite
        );
        let revoke = |key: &[u8]| Change::RoleRevokePermission {
            role: "reader".into(),
            key: key.to_vec(),
            range_end: b"b".to_vec(),
        };
        assert_eq!(
            run(&state, revoke(b"x")),
            Err(AuthError::PermissionNotGranted)
        );
        let state = run(&state, revoke(b"a")).unwrap();
        assert!(state.roles["reader"].permissions.is_empty());
        // Deleting a role takes it from its users.
        let state = run(&state, Change::RoleDelete("reader".into())).unwrap();
        assert!(state.users["alice"].roles.is_empty());
        assert_eq!(
            run(
                &state,
                Change::UserRevokeRole {
                    user: "alice".into(),
                    role: "reader".into()
                }
            ),
            Err(AuthError::RoleNotGranted)
        );
        assert_eq!(
            permission(7, vec![], vec![]),
            Err(AuthError::InvalidPermission)
        );
    }
}
