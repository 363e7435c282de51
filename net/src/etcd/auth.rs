//! etcd's Auth service (docs/security.md, "Auth"): users, roles,
//! permissions, `auth enable`/`disable`, and Authenticate, which hands out
//! a token. Management calls need the root role once auth is on (before,
//! anyone may make them, as in etcd); each is a change to the auth record
//! in shard 0, made from the record this member follows and made again if
//! another change came first.

use keel_engine::mvcc::KvError;
use keel_engine::shard::NodeError;
use keel_etcd_api::authpb;
use keel_etcd_api::etcdserverpb as pb;
use keel_etcd_api::etcdserverpb::auth_server::Auth as AuthApi;
use tonic::{Request, Response, Status};

use crate::auth::ops::{self, Change};
use crate::auth::record::ROOT;
use crate::auth::{Auth, AuthError, Caller, Compiled};
use crate::etcd::cores::{client, Cores};
use crate::etcd::errors::auth_status;
use crate::etcd::header::Headers;
use crate::etcd::identity::{admit, Identity, IdentityOf};

/// Times a change is made again after another change came first.
const MAX_ATTEMPTS: usize = 8;
/// How long a change waits for this member to follow it.
const CATCH_UP: std::time::Duration = std::time::Duration::from_secs(3);

/// The Auth service of one node.
#[derive(Clone)]
pub(crate) struct AuthService {
    pub(crate) headers: Headers,
    pub(crate) cores: Cores,
    pub(crate) auth: Auth,
}

fn refused(error: AuthError) -> Status {
    auth_status(&error)
}

impl AuthService {
    /// The caller of `request`, who must hold the root role once auth is
    /// on; answered for [`AuthService::change`], which checks it again.
    fn admin<T>(&self, request: &Request<T>) -> Result<Identity, Status> {
        let (compiled, caller) = admit(&self.auth, request)?;
        compiled.may_administer(&caller).map_err(refused)?;
        Ok(Identity::of(request))
    }

    /// Makes `change` for `identity`, and answers once this member
    /// follows it. Each attempt checks the caller against the very record
    /// the change is made from, so that a change made again after another
    /// came first (auth enabled, the caller's root role revoked) is
    /// checked under that one.
    async fn change(
        &self,
        identity: &Identity,
        change: Change,
    ) -> Result<pb::ResponseHeader, Status> {
        for _ in 0..MAX_ATTEMPTS {
            let compiled = self.auth.current();
            let caller = compiled.admit(identity.credential()).map_err(refused)?;
            compiled.may_administer(&caller).map_err(refused)?;
            let Some(next) =
                ops::apply(&compiled.state, &change, compiled.revision + 1).map_err(refused)?
            else {
                return Ok(self.headers.member());
            };
            let (base, bytes) = (compiled.revision, next.encode());
            // Ok(Err(current)): another change came first.
            let changed = self
                .cores
                .call_for_shard(0, move |node, core| {
                    Box::pin(async move {
                        match client(&node, core).change_auth(base, bytes).await {
                            Ok(revision) => Ok(Ok(revision)),
                            Err(NodeError::Kv(KvError::AuthChanged { current, .. })) => {
                                Ok(Err(current))
                            }
                            Err(error) => Err(error),
                        }
                    })
                })
                .await?;
            match changed {
                Ok(revision) => {
                    self.follow(revision).await;
                    return Ok(self.headers.member());
                }
                // Once this member follows it, make this one again from it.
                Err(current) => self.follow(current).await,
            }
        }
        Err(refused(AuthError::Unavailable(
            "auth changes kept racing; try again".to_string(),
        )))
    }

    /// Waits (a while at most) until this member follows auth revision
    /// `revision`, so that the caller's next call sees its change.
    async fn follow(&self, revision: u64) {
        let deadline = tokio::time::Instant::now() + CATCH_UP;
        while self.auth.current().revision < revision && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
    }

    /// A password of a new user or a new password, hashed: etcd 3.5's
    /// `hashedPassword` as given, else `password` hashed here.
    async fn hash(&self, password: String, hashed: String) -> Result<String, Status> {
        if !hashed.is_empty() {
            return Ok(hashed);
        }
        self.auth.hash_password(password).await.map_err(refused)
    }
}

/// Whether `caller` may read what admins may, or this about itself.
fn admin_or(compiled: &Compiled, caller: &Caller, own: bool) -> Result<(), Status> {
    if own {
        return Ok(());
    }
    compiled.may_administer(caller).map_err(refused)
}

fn permission_of(permission: &crate::auth::record::Permission) -> authpb::Permission {
    authpb::Permission {
        perm_type: permission.kind.etcd_number(),
        key: permission.key.clone(),
        range_end: permission.range_end.clone(),
    }
}

#[tonic::async_trait]
impl AuthApi for AuthService {
    async fn auth_enable(
        &self,
        request: Request<pb::AuthEnableRequest>,
    ) -> Result<Response<pb::AuthEnableResponse>, Status> {
        let identity = self.admin(&request)?;
        let header = self.change(&identity, Change::AuthEnable).await?;
        Ok(Response::new(pb::AuthEnableResponse {
            header: Some(header),
        }))
    }

    async fn auth_disable(
        &self,
        request: Request<pb::AuthDisableRequest>,
    ) -> Result<Response<pb::AuthDisableResponse>, Status> {
        let identity = self.admin(&request)?;
        let header = self.change(&identity, Change::AuthDisable).await?;
        Ok(Response::new(pb::AuthDisableResponse {
            header: Some(header),
        }))
    }

    async fn auth_status(
        &self,
        _request: Request<pb::AuthStatusRequest>,
    ) -> Result<Response<pb::AuthStatusResponse>, Status> {
        let compiled = self.auth.current();
        if compiled.is_unavailable() {
            return Err(refused(AuthError::Unavailable(
                "this member cannot read its auth record now".to_string(),
            )));
        }
        Ok(Response::new(pb::AuthStatusResponse {
            header: Some(self.headers.member()),
            enabled: compiled.enabled(),
            auth_revision: compiled.revision,
        }))
    }

    async fn authenticate(
        &self,
        request: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let request = request.into_inner();
        let token = self
            .auth
            .log_in(request.name, request.password)
            .await
            .map_err(refused)?;
        Ok(Response::new(pb::AuthenticateResponse {
            header: Some(self.headers.member()),
            token,
        }))
    }

    async fn user_add(
        &self,
        request: Request<pb::AuthUserAddRequest>,
    ) -> Result<Response<pb::AuthUserAddResponse>, Status> {
        let identity = self.admin(&request)?;
        let request = request.into_inner();
        if request.name.is_empty() {
            return Err(refused(AuthError::UserEmpty));
        }
        let no_password = request.options.is_some_and(|o| o.no_password);
        let password_hash = match no_password {
            true => None,
            false => Some(self.hash(request.password, request.hashed_password).await?),
        };
        let header = self
            .change(
                &identity,
                Change::UserAdd {
                    name: request.name,
                    password_hash,
                },
            )
            .await?;
        Ok(Response::new(pb::AuthUserAddResponse {
            header: Some(header),
        }))
    }

    async fn user_get(
        &self,
        request: Request<pb::AuthUserGetRequest>,
    ) -> Result<Response<pb::AuthUserGetResponse>, Status> {
        let (compiled, caller) = admit(&self.auth, &request)?;
        let name = request.into_inner().name;
        admin_or(&compiled, &caller, caller.name() == Some(name.as_str()))?;
        let user = compiled
            .state
            .users
            .get(&name)
            .ok_or_else(|| refused(AuthError::UserNotFound))?;
        Ok(Response::new(pb::AuthUserGetResponse {
            header: Some(self.headers.member()),
            roles: user.roles.iter().cloned().collect(),
        }))
    }

    async fn user_list(
        &self,
        request: Request<pb::AuthUserListRequest>,
    ) -> Result<Response<pb::AuthUserListResponse>, Status> {
        self.admin(&request)?;
        let compiled = self.auth.current();
        Ok(Response::new(pb::AuthUserListResponse {
            header: Some(self.headers.member()),
            users: compiled.state.users.keys().cloned().collect(),
        }))
    }

    async fn user_delete(
        &self,
        request: Request<pb::AuthUserDeleteRequest>,
    ) -> Result<Response<pb::AuthUserDeleteResponse>, Status> {
        let identity = self.admin(&request)?;
        let header = self
            .change(&identity, Change::UserDelete(request.into_inner().name))
            .await?;
        Ok(Response::new(pb::AuthUserDeleteResponse {
            header: Some(header),
        }))
    }

    async fn user_change_password(
        &self,
        request: Request<pb::AuthUserChangePasswordRequest>,
    ) -> Result<Response<pb::AuthUserChangePasswordResponse>, Status> {
        let identity = self.admin(&request)?;
        let request = request.into_inner();
        if !self.auth.current().state.users.contains_key(&request.name) {
            return Err(refused(AuthError::UserNotFound));
        }
        let password_hash = self.hash(request.password, request.hashed_password).await?;
        let header = self
            .change(
                &identity,
                Change::UserChangePassword {
                    name: request.name,
                    password_hash,
                },
            )
            .await?;
        Ok(Response::new(pb::AuthUserChangePasswordResponse {
            header: Some(header),
        }))
    }

    async fn user_grant_role(
        &self,
        request: Request<pb::AuthUserGrantRoleRequest>,
    ) -> Result<Response<pb::AuthUserGrantRoleResponse>, Status> {
        let identity = self.admin(&request)?;
        let request = request.into_inner();
        let header = self
            .change(
                &identity,
                Change::UserGrantRole {
                    user: request.user,
                    role: request.role,
                },
            )
            .await?;
        Ok(Response::new(pb::AuthUserGrantRoleResponse {
            header: Some(header),
        }))
    }

    async fn user_revoke_role(
        &self,
        request: Request<pb::AuthUserRevokeRoleRequest>,
    ) -> Result<Response<pb::AuthUserRevokeRoleResponse>, Status> {
        let identity = self.admin(&request)?;
        let request = request.into_inner();
        let header = self
            .change(
                &identity,
                Change::UserRevokeRole {
                    user: request.name,
                    role: request.role,
                },
            )
            .await?;
        Ok(Response::new(pb::AuthUserRevokeRoleResponse {
            header: Some(header),
        }))
    }

    async fn role_add(
        &self,
        request: Request<pb::AuthRoleAddRequest>,
    ) -> Result<Response<pb::AuthRoleAddResponse>, Status> {
        let identity = self.admin(&request)?;
        let header = self
            .change(&identity, Change::RoleAdd(request.into_inner().name))
            .await?;
        Ok(Response::new(pb::AuthRoleAddResponse {
            header: Some(header),
        }))
    }

    async fn role_get(
        &self,
        request: Request<pb::AuthRoleGetRequest>,
    ) -> Result<Response<pb::AuthRoleGetResponse>, Status> {
        let (compiled, caller) = admit(&self.auth, &request)?;
        let name = request.into_inner().role;
        let own = caller
            .name()
            .and_then(|user| compiled.state.users.get(user))
            .is_some_and(|user| user.roles.contains(&name));
        admin_or(&compiled, &caller, own)?;
        let role = compiled.state.roles.get(&name);
        let perm = match role {
            Some(role) => role.permissions.iter().map(permission_of).collect(),
            // The root role may do anything, whether or not it was added.
            None if name == ROOT => Vec::new(),
            None => return Err(refused(AuthError::RoleNotFound)),
        };
        Ok(Response::new(pb::AuthRoleGetResponse {
            header: Some(self.headers.member()),
            perm,
        }))
    }

    async fn role_list(
        &self,
        request: Request<pb::AuthRoleListRequest>,
    ) -> Result<Response<pb::AuthRoleListResponse>, Status> {
        self.admin(&request)?;
        let compiled = self.auth.current();
        Ok(Response::new(pb::AuthRoleListResponse {
            header: Some(self.headers.member()),
            roles: compiled.state.roles.keys().cloned().collect(),
        }))
    }

    async fn role_delete(
        &self,
        request: Request<pb::AuthRoleDeleteRequest>,
    ) -> Result<Response<pb::AuthRoleDeleteResponse>, Status> {
        let identity = self.admin(&request)?;
        let header = self
            .change(&identity, Change::RoleDelete(request.into_inner().role))
            .await?;
        Ok(Response::new(pb::AuthRoleDeleteResponse {
            header: Some(header),
        }))
    }

    async fn role_grant_permission(
        &self,
        request: Request<pb::AuthRoleGrantPermissionRequest>,
    ) -> Result<Response<pb::AuthRoleGrantPermissionResponse>, Status> {
        let identity = self.admin(&request)?;
        let request = request.into_inner();
        let perm = request
            .perm
            .ok_or_else(|| refused(AuthError::InvalidPermission))?;
        let permission =
            ops::permission(perm.perm_type, perm.key, perm.range_end).map_err(refused)?;
        let header = self
            .change(
                &identity,
                Change::RoleGrantPermission {
                    role: request.name,
                    permission,
                },
            )
            .await?;
        Ok(Response::new(pb::AuthRoleGrantPermissionResponse {
            header: Some(header),
        }))
    }

    async fn role_revoke_permission(
        &self,
        request: Request<pb::AuthRoleRevokePermissionRequest>,
    ) -> Result<Response<pb::AuthRoleRevokePermissionResponse>, Status> {
        let identity = self.admin(&request)?;
        let request = request.into_inner();
        let header = self
            .change(
                &identity,
                Change::RoleRevokePermission {
                    role: request.role,
                    key: request.key,
                    range_end: request.range_end,
                },
            )
            .await?;
        Ok(Response::new(pb::AuthRoleRevokePermissionResponse {
            header: Some(header),
        }))
    }
}
