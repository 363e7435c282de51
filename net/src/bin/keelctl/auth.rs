//! `user`, `role` and `auth`: etcd's Auth service through etcd's gRPC API
//! on the endpoint, printed as etcdctl 3.4 prints it.

use clap::{Args, Subcommand};
use keel_etcd_api::authpb;
use keel_etcd_api::etcdserverpb as pb;

use crate::cli::Failure;
use crate::connect::Connect;

#[derive(Debug, Subcommand)]
pub(crate) enum UserCommand {
    /// Adds a user (`name:password`, or prompts for the password).
    Add {
        /// `name` or `name:password`.
        user: String,
        /// Read the password from stdin rather than prompting.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        interactive: bool,
        /// The password, instead of after a colon or prompted for.
        #[arg(long)]
        new_user_password: Option<String>,
        /// A user without a password, known by its certificate's common
        /// name.
        #[arg(long)]
        no_password: bool,
    },
    /// Shows a user's roles.
    Get {
        /// The user.
        name: String,
        /// Show each role's permissions too.
        #[arg(long)]
        detail: bool,
    },
    /// Lists the users.
    List,
    /// Deletes a user.
    Delete {
        /// The user.
        name: String,
    },
    /// Changes a user's password (prompted for, or from stdin).
    Passwd {
        /// The user.
        name: String,
        /// Read the password from stdin rather than prompting.
        #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
        interactive: bool,
    },
    /// Grants a role to a user.
    GrantRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
    /// Revokes a role from a user.
    RevokeRole {
        /// The user.
        user: String,
        /// The role.
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum RoleCommand {
    /// Adds a role.
    Add {
        /// The role.
        name: String,
    },
    /// Shows a role's permissions.
    Get {
        /// The role.
        name: String,
    },
    /// Lists the roles.
    List,
    /// Deletes a role.
    Delete {
        /// The role.
        name: String,
    },
    /// Grants a role read, write or readwrite on a key, a range
    /// (`key endkey`), a prefix (--prefix) or every key from one on
    /// (--from-key).
    GrantPermission(PermissionArgs),
    /// Revokes a permission from a role.
    RevokePermission(RevokeArgs),
}

#[derive(Debug, Args)]
pub(crate) struct PermissionArgs {
    /// The role.
    role: String,
    /// read, write or readwrite.
    kind: String,
    /// The key, or the range's first key.
    key: String,
    /// The range's end (exclusive).
    end: Option<String>,
    /// Every key with `key` as its prefix.
    #[arg(long)]
    prefix: bool,
    /// Every key from `key` on.
    #[arg(long)]
    from_key: bool,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    /// The role.
    role: String,
    /// The key, or the range's first key.
    key: String,
    /// The range's end (exclusive).
    end: Option<String>,
    /// Every key with `key` as its prefix.
    #[arg(long)]
    prefix: bool,
    /// Every key from `key` on.
    #[arg(long)]
    from_key: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AuthCommand {
    /// Turns auth on (needs user root; the root role is added and granted
    /// to it if missing, as etcdctl does).
    Enable,
    /// Turns auth off.
    Disable,
    /// Whether auth is on, and the auth revision.
    Status,
}

fn failed(status: tonic::Status) -> Failure {
    Failure::from(status.message().to_string())
}

/// A password: after the colon of `user`, given, read from stdin, or
/// prompted for.
fn password(name: &str, given: Option<String>, interactive: bool) -> Result<String, Failure> {
    if let Some(given) = given {
        return Ok(given);
    }
    use std::io::{BufRead, Write};
    let read = || {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| Failure::from(e.to_string()))?;
        Ok::<_, Failure>(line.trim_end_matches(['\r', '\n']).to_string())
    };
    if !interactive {
        return read();
    }
    eprint!("Password of {name}: ");
    let _ = std::io::stderr().flush();
    let first = read()?;
    eprint!("Type password of {name} again for confirmation: ");
    let _ = std::io::stderr().flush();
    if read()? != first {
        return Err(Failure::from("given passwords are different"));
    }
    Ok(first)
}

/// etcdctl's key and range end of a permission.
fn permission_range(
    key: &str,
    end: Option<&str>,
    prefix: bool,
    from_key: bool,
) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    if prefix && from_key {
        return Err(Failure::bad_args(
            "--from-key and --prefix flags are mutually exclusive",
        ));
    }
    if key.is_empty() {
        // The empty key is "\0", and with --prefix or --from-key the whole
        // keyspace (etcdctl's rule).
        let end = if prefix || from_key {
            vec![0]
        } else {
            Vec::new()
        };
        return Ok((vec![0], end));
    }
    let end = match (end, prefix, from_key) {
        (None, true, _) => keel_client::prefix_end(key.as_bytes()),
        (None, _, true) => vec![0],
        (None, false, false) => Vec::new(),
        (Some(_), true, _) => {
            return Err(Failure::bad_args(
                "unexpected endkey argument with --prefix flag",
            ))
        }
        (Some(_), _, true) => {
            return Err(Failure::bad_args(
                "unexpected endkey argument with --from-key flag",
            ))
        }
        (Some(end), false, false) => end.as_bytes().to_vec(),
    };
    Ok((key.as_bytes().to_vec(), end))
}

/// A permission's range as etcdctl prints it.
fn shown_range(permission: &authpb::Permission) -> String {
    let key = String::from_utf8_lossy(&permission.key);
    if permission.range_end.is_empty() {
        return format!("\t{key}");
    }
    let end = String::from_utf8_lossy(&permission.range_end);
    let mut shown = if permission.range_end == [0] {
        format!("\t[{key}, <open ended>")
    } else {
        format!("\t[{key}, {end})")
    };
    if keel_client::prefix_end(&permission.key) == permission.range_end {
        shown.push_str(&format!(" (prefix {key})"));
    }
    shown
}

fn print_role(name: &str, permissions: &[authpb::Permission]) {
    println!("Role {name}");
    println!("KV Read:");
    for permission in permissions.iter().filter(|p| p.perm_type != 1) {
        println!("{}", shown_range(permission));
    }
    println!("KV Write:");
    for permission in permissions.iter().filter(|p| p.perm_type != 0) {
        println!("{}", shown_range(permission));
    }
}

pub(crate) async fn user(
    connect: &Connect,
    endpoint: &str,
    command: UserCommand,
) -> Result<(), Failure> {
    let mut auth = connect.auth(endpoint).await?;
    match command {
        UserCommand::Add {
            user,
            interactive,
            new_user_password,
            no_password,
        } => {
            let (name, given) = match user.split_once(':') {
                Some((name, password)) => (name.to_string(), Some(password.to_string())),
                None => (user, new_user_password),
            };
            let password = match no_password {
                true => String::new(),
                false => password(&name, given, interactive)?,
            };
            let request = pb::AuthUserAddRequest {
                name: name.clone(),
                password,
                options: Some(authpb::UserAddOptions { no_password }),
                hashed_password: String::new(),
            };
            auth.user_add(connect.request(request))
                .await
                .map_err(failed)?;
            println!("User {name} created");
        }
        UserCommand::Get { name, detail } => {
            let request = pb::AuthUserGetRequest { name: name.clone() };
            let roles = auth
                .user_get(connect.request(request))
                .await
                .map_err(failed)?
                .into_inner()
                .roles;
            println!("User: {name}");
            if detail {
                for role in roles {
                    let request = pb::AuthRoleGetRequest { role: role.clone() };
                    let got = auth
                        .role_get(connect.request(request))
                        .await
                        .map_err(failed)?;
                    print_role(&role, &got.into_inner().perm);
                }
            } else {
                let shown: String = roles.iter().map(|role| format!(" {role}")).collect();
                println!("Roles:{shown}");
            }
        }
        UserCommand::List => {
            let users = auth
                .user_list(connect.request(pb::AuthUserListRequest {}))
                .await
                .map_err(failed)?
                .into_inner()
                .users;
            for user in users {
                println!("{user}");
            }
        }
        UserCommand::Delete { name } => {
            let request = pb::AuthUserDeleteRequest { name: name.clone() };
            auth.user_delete(connect.request(request))
                .await
                .map_err(failed)?;
            println!("User {name} deleted");
        }
        UserCommand::Passwd { name, interactive } => {
            let password = password(&name, None, interactive)?;
            let request = pb::AuthUserChangePasswordRequest {
                name,
                password,
                hashed_password: String::new(),
            };
            auth.user_change_password(connect.request(request))
                .await
                .map_err(failed)?;
            println!("Password updated");
        }
        UserCommand::GrantRole { user, role } => {
            let request = pb::AuthUserGrantRoleRequest {
                user: user.clone(),
                role: role.clone(),
            };
            auth.user_grant_role(connect.request(request))
                .await
                .map_err(failed)?;
            println!("Role {role} is granted to user {user}");
        }
        UserCommand::RevokeRole { user, role } => {
            let request = pb::AuthUserRevokeRoleRequest {
                name: user.clone(),
                role: role.clone(),
            };
            auth.user_revoke_role(connect.request(request))
                .await
                .map_err(failed)?;
            println!("Role {role} is revoked from user {user}");
        }
    }
    Ok(())
}

pub(crate) async fn role(
    connect: &Connect,
    endpoint: &str,
    command: RoleCommand,
) -> Result<(), Failure> {
    let mut auth = connect.auth(endpoint).await?;
    match command {
        RoleCommand::Add { name } => {
            let request = pb::AuthRoleAddRequest { name: name.clone() };
            auth.role_add(connect.request(request))
                .await
                .map_err(failed)?;
            println!("Role {name} created");
        }
        RoleCommand::Get { name } => {
            let request = pb::AuthRoleGetRequest { role: name.clone() };
            let got = auth
                .role_get(connect.request(request))
                .await
                .map_err(failed)?;
            print_role(&name, &got.into_inner().perm);
        }
        RoleCommand::List => {
            let roles = auth
                .role_list(connect.request(pb::AuthRoleListRequest {}))
                .await
                .map_err(failed)?
                .into_inner()
                .roles;
            for role in roles {
                println!("{role}");
            }
        }
        RoleCommand::Delete { name } => {
            let request = pb::AuthRoleDeleteRequest { role: name.clone() };
            auth.role_delete(connect.request(request))
                .await
                .map_err(failed)?;
            println!("Role {name} deleted");
        }
        RoleCommand::GrantPermission(args) => {
            let perm_type = match args.kind.to_ascii_lowercase().as_str() {
                "read" => 0,
                "write" => 1,
                "readwrite" => 2,
                other => {
                    return Err(Failure::bad_args(format!(
                        "invalid permission type {other}: read, write or readwrite"
                    )))
                }
            };
            let (key, range_end) =
                permission_range(&args.key, args.end.as_deref(), args.prefix, args.from_key)?;
            let request = pb::AuthRoleGrantPermissionRequest {
                name: args.role.clone(),
                perm: Some(authpb::Permission {
                    perm_type,
                    key,
                    range_end,
                }),
            };
            auth.role_grant_permission(connect.request(request))
                .await
                .map_err(failed)?;
            println!("Role {} updated", args.role);
        }
        RoleCommand::RevokePermission(args) => {
            let (key, range_end) =
                permission_range(&args.key, args.end.as_deref(), args.prefix, args.from_key)?;
            let request = pb::AuthRoleRevokePermissionRequest {
                role: args.role.clone(),
                key: key.clone(),
                range_end: range_end.clone(),
            };
            auth.role_revoke_permission(connect.request(request))
                .await
                .map_err(failed)?;
            let key = String::from_utf8_lossy(&key);
            let end = String::from_utf8_lossy(&range_end);
            match range_end.as_slice() {
                [] => println!("Permission of key {key} is revoked from role {}", args.role),
                [0] => println!(
                    "Permission of range [{key}, <open ended> is revoked from role {}",
                    args.role
                ),
                _ => println!(
                    "Permission of range [{key}, {end}) is revoked from role {}",
                    args.role
                ),
            }
        }
    }
    Ok(())
}

pub(crate) async fn auth(
    connect: &Connect,
    endpoint: &str,
    command: AuthCommand,
) -> Result<(), Failure> {
    let mut auth = connect.auth(endpoint).await?;
    match command {
        AuthCommand::Enable => {
            // etcdctl adds the root role and grants it to root when only
            // that is missing.
            for _ in 0..2 {
                match auth
                    .auth_enable(connect.request(pb::AuthEnableRequest {}))
                    .await
                {
                    Ok(_) => {
                        println!("Authentication Enabled");
                        return Ok(());
                    }
                    Err(status)
                        if status.message() == "etcdserver: root user does not have root role" =>
                    {
                        let add = pb::AuthRoleAddRequest {
                            name: "root".into(),
                        };
                        let added = auth.role_add(connect.request(add)).await;
                        if let Err(status) = added {
                            if status.message() != "etcdserver: role name already exists" {
                                return Err(failed(status));
                            }
                        }
                        let grant = pb::AuthUserGrantRoleRequest {
                            user: "root".into(),
                            role: "root".into(),
                        };
                        auth.user_grant_role(connect.request(grant))
                            .await
                            .map_err(failed)?;
                    }
                    Err(status) => return Err(failed(status)),
                }
            }
            Err(Failure::from("auth enable did not take"))
        }
        AuthCommand::Disable => {
            auth.auth_disable(connect.request(pb::AuthDisableRequest {}))
                .await
                .map_err(failed)?;
            println!("Authentication Disabled");
            Ok(())
        }
        AuthCommand::Status => {
            let status = auth
                .auth_status(connect.request(pb::AuthStatusRequest {}))
                .await
                .map_err(failed)?
                .into_inner();
            println!("Authentication Status: {}", status.enabled);
            println!("AuthRevision: {}", status.auth_revision);
            Ok(())
        }
    }
}
