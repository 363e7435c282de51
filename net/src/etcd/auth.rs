//! etcd's Auth service while keel has no authentication (it comes with
//! the security work): the status says disabled, disabling succeeds, and
//! every other call is refused with etcd's "authentication is not
//! enabled" (etcd itself refuses only Authenticate so with authentication
//! off; it keeps users and roles, which keel does not have yet).

use keel_etcd_api::etcdserverpb as pb;
use keel_etcd_api::etcdserverpb::auth_server::Auth;
use tonic::{Request, Response, Status};

use crate::etcd::header::Headers;

/// The Auth service of one node.
#[derive(Clone)]
pub(crate) struct AuthService {
    pub(crate) headers: Headers,
}

fn not_enabled() -> Status {
    Status::failed_precondition("etcdserver: authentication is not enabled")
}

/// The Auth impl: status and disable answered, and the methods listed
/// (`name(request) -> response`) refused with [`not_enabled`]. One macro
/// around the whole impl, as `async_trait` rewrites the methods it sees.
macro_rules! auth_impl {
    ($($name:ident($request:ident) -> $response:ident;)*) => {
        #[tonic::async_trait]
        impl Auth for AuthService {
            async fn auth_status(
                &self,
                _request: Request<pb::AuthStatusRequest>,
            ) -> Result<Response<pb::AuthStatusResponse>, Status> {
                Ok(Response::new(pb::AuthStatusResponse {
                    header: Some(self.headers.member()),
                    enabled: false,
                    auth_revision: 0,
                }))
            }

            async fn auth_disable(
                &self,
                _request: Request<pb::AuthDisableRequest>,
            ) -> Result<Response<pb::AuthDisableResponse>, Status> {
                Ok(Response::new(pb::AuthDisableResponse {
                    header: Some(self.headers.member()),
                }))
            }

            $(
                async fn $name(
                    &self,
                    _request: Request<pb::$request>,
                ) -> Result<Response<pb::$response>, Status> {
                    Err(not_enabled())
                }
            )*
        }
    };
}

auth_impl! {
    auth_enable(AuthEnableRequest) -> AuthEnableResponse;
    authenticate(AuthenticateRequest) -> AuthenticateResponse;
    user_add(AuthUserAddRequest) -> AuthUserAddResponse;
    user_get(AuthUserGetRequest) -> AuthUserGetResponse;
    user_list(AuthUserListRequest) -> AuthUserListResponse;
    user_delete(AuthUserDeleteRequest) -> AuthUserDeleteResponse;
    user_change_password(AuthUserChangePasswordRequest) -> AuthUserChangePasswordResponse;
    user_grant_role(AuthUserGrantRoleRequest) -> AuthUserGrantRoleResponse;
    user_revoke_role(AuthUserRevokeRoleRequest) -> AuthUserRevokeRoleResponse;
    role_add(AuthRoleAddRequest) -> AuthRoleAddResponse;
    role_get(AuthRoleGetRequest) -> AuthRoleGetResponse;
    role_list(AuthRoleListRequest) -> AuthRoleListResponse;
    role_delete(AuthRoleDeleteRequest) -> AuthRoleDeleteResponse;
    role_grant_permission(AuthRoleGrantPermissionRequest) -> AuthRoleGrantPermissionResponse;
    role_revoke_permission(AuthRoleRevokePermissionRequest) -> AuthRoleRevokePermissionResponse;
}
