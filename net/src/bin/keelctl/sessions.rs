//! lease, lock and elect: the commands that hold something over time.

use std::time::Duration;

use keel_client::Client;
use serde_json::json;

use crate::cli::{describe, parse_lease, timed, CommandResult, LeaseCommand};
use crate::output::{self, Format};

pub(crate) async fn lease(
    client: &Client,
    timeout: Duration,
    format: Format,
    command: LeaseCommand,
) -> CommandResult {
    match command {
        LeaseCommand::Grant { ttl, id } => {
            let id = id.as_deref().map(parse_lease).transpose()?.unwrap_or(0);
            let (id, ttl) = timed(timeout, client.lease_grant(id, ttl)).await?;
            match format {
                Format::Simple => println!("lease {id:016x} granted with TTL({ttl}s)"),
                Format::Json => output::print_json(&json!({ "ID": id, "TTL": ttl })),
            }
        }
        LeaseCommand::Revoke { id } => {
            let id = parse_lease(&id)?;
            timed(timeout, client.lease_revoke(id)).await?;
            println!("lease {id:016x} revoked");
        }
        LeaseCommand::KeepAlive { id, once } => {
            let id = parse_lease(&id)?;
            loop {
                let ttl = timed(timeout, client.lease_keep_alive_once(id)).await?;
                if ttl <= 0 {
                    return Err(format!("lease {id:016x} expired or revoked"));
                }
                println!("lease {id:016x} keepalived with TTL({ttl})");
                if once {
                    return Ok(());
                }
                let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(100));
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = tokio::signal::ctrl_c() => return Ok(()),
                }
            }
        }
        LeaseCommand::Timetolive { id, keys } => {
            let id = parse_lease(&id)?;
            let answer = timed(timeout, client.lease_time_to_live(id, keys)).await?;
            match format {
                Format::Simple if answer.ttl < 0 => println!("lease {id:016x} already expired"),
                Format::Simple => {
                    print!(
                        "lease {id:016x} granted with TTL({}s), remaining({}s)",
                        answer.granted_ttl, answer.ttl
                    );
                    if keys {
                        let keys: Vec<String> =
                            answer.keys.iter().map(|k| output::text(k)).collect();
                        print!(", attached keys([{}])", keys.join(" "));
                    }
                    println!();
                }
                Format::Json => output::print_json(&json!({
                    "id": id,
                    "ttl": answer.ttl,
                    "granted-ttl": answer.granted_ttl,
                    "keys": answer.keys.iter().map(|k| output::base64(k)).collect::<Vec<_>>(),
                })),
            }
        }
        LeaseCommand::List => {
            let leases = timed(timeout, client.lease_leases()).await?;
            match format {
                Format::Simple => {
                    println!("found {} leases", leases.len());
                    for lease in &leases {
                        println!("{:016x}", lease.id);
                    }
                }
                Format::Json => output::print_json(&json!({
                    "leases": leases.iter().map(|l| json!({ "ID": l.id, "TTL": l.ttl })).collect::<Vec<_>>(),
                })),
            }
        }
    }
    Ok(())
}

/// Grants a session lease and keeps it alive while the caller holds the
/// returned handle.
async fn session(
    client: &Client,
    timeout: Duration,
    ttl: i64,
) -> Result<keel_client::KeepAlive, String> {
    let (id, ttl) = timed(timeout, client.lease_grant(0, ttl)).await?;
    Ok(client.lease_keep_alive(id, ttl))
}

pub(crate) async fn lock(
    client: &Client,
    timeout: Duration,
    name: &str,
    ttl: i64,
    command: Vec<String>,
) -> CommandResult {
    let mut keep_alive = session(client, timeout, ttl).await?;
    let lease = keep_alive.id();
    // Interrupted while waiting, the session's lease is revoked, which
    // takes this contender's key out of the line (as etcdctl cleans up).
    let waited = tokio::select! {
        guard = client.lock(name, lease) => guard.map_err(describe),
        () = interrupted() => Err("interrupted while waiting for the lock".to_string()),
        lost = keep_alive.lost() => Err(describe(lost)),
    };
    let guard = match waited {
        Ok(guard) => guard,
        Err(error) => {
            drop(keep_alive);
            let _ = timed(timeout, client.lease_revoke(lease)).await;
            return Err(error);
        }
    };
    println!("{}", output::text(guard.key()));
    let holding = match command.split_first() {
        Some((program, arguments)) => {
            // The command learns what it holds (etcdctl's ETCD_LOCK_KEY
            // and ETCD_LOCK_REV, under keel's names), and is stopped if
            // the lease is lost while it runs.
            let child = tokio::process::Command::new(program)
                .args(arguments)
                .env(
                    "KEEL_LOCK_KEY",
                    String::from_utf8_lossy(guard.key()).as_ref(),
                )
                .env("KEEL_LOCK_REV", guard.revision().to_string())
                .kill_on_drop(true)
                .spawn();
            match child {
                Err(e) => Err(format!("cannot run {program}: {e}")),
                Ok(mut child) => tokio::select! {
                    status = child.wait() => match status {
                        Ok(status) if status.success() => Ok(()),
                        Ok(status) => Err(format!("{program} exited with {:?}", status.code())),
                        Err(e) => Err(format!("waiting for {program}: {e}")),
                    },
                    lost = keep_alive.lost() => Err(format!("{}; {program} was stopped", describe(lost))),
                    () = interrupted() => Err(format!("interrupted; {program} was stopped")),
                },
            }
        }
        None => tokio::select! {
            () = interrupted() => Ok(()),
            lost = keep_alive.lost() => Err(describe(lost)),
        },
    };
    drop(keep_alive);
    // Revoking the session's lease deletes the lock's key: the lock is
    // released whatever happened while it was held.
    let released = timed(timeout, client.lease_revoke(lease)).await;
    holding.and(released)
}

pub(crate) async fn elect(
    client: &Client,
    timeout: Duration,
    name: &str,
    proposal: Option<String>,
    listen: bool,
    ttl: i64,
) -> CommandResult {
    if listen {
        let mut observer = client.observe(name).await.map_err(describe)?;
        loop {
            let leader = tokio::select! {
                leader = observer.next() => leader.map_err(describe)?,
                _ = tokio::signal::ctrl_c() => return Ok(()),
            };
            println!("{}", output::text(&leader.key));
            println!("{}", output::text(&leader.value));
        }
    }
    let proposal = proposal.ok_or("a proposal is needed to campaign (or use --listen)")?;
    let mut keep_alive = session(client, timeout, ttl).await?;
    let lease = keep_alive.id();
    // Interrupted while campaigning, the candidacy goes with the lease.
    let campaigned = tokio::select! {
        leadership = client.campaign(name, lease, &proposal) => leadership.map_err(describe),
        () = interrupted() => Err("interrupted while campaigning".to_string()),
        lost = keep_alive.lost() => Err(describe(lost)),
    };
    let leadership = match campaigned {
        Ok(leadership) => leadership,
        Err(error) => {
            drop(keep_alive);
            let _ = timed(timeout, client.lease_revoke(lease)).await;
            return Err(error);
        }
    };
    println!("{}", output::text(leadership.key()));
    println!("{proposal}");
    tokio::select! {
        () = interrupted() => {}
        lost = keep_alive.lost() => return Err(describe(lost)),
    }
    timed(timeout, client.resign(leadership)).await?;
    let _ = client.lease_revoke(lease).await;
    Ok(())
}

/// Resolves at SIGINT (Ctrl-C) or SIGTERM.
async fn interrupted() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        () = terminate => {}
    }
}
