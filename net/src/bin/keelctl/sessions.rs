//! lease, lock and elect: the commands that hold something over time.

use std::time::Duration;

use keel_client::Client;
use serde_json::json;

use crate::cli::{describe, parse_lease, timed, CommandResult, Failure, LeaseCommand};
use crate::etcd_format::{fields_header, go_quote};
use crate::output::{self, Format};

pub(crate) async fn lease(
    client: &Client,
    timeout: Duration,
    format: Format,
    command: LeaseCommand,
) -> CommandResult {
    // etcdctl's lease answers flatten their header into the answer; keel's
    // lease answers carry no revision (0).
    if format == Format::Table {
        return Err(Failure::unsupported(format));
    }
    match command {
        LeaseCommand::Grant { ttl, id } => {
            let ttl: i64 = ttl
                .parse()
                .map_err(|e| Failure::bad_args(format!("bad TTL ({e})")))?;
            let id = id.as_deref().map(parse_lease).transpose()?.unwrap_or(0);
            let (id, ttl) = timed(timeout, client.lease_grant(id, ttl)).await?;
            match format {
                Format::Json => output::print_json(&json!({ "ID": id, "TTL": ttl, "Error": "" })),
                Format::Fields => {
                    fields_header(0, 0);
                    println!("\"ID\" : {id}");
                    println!("\"TTL\" : {ttl}");
                }
                Format::Simple | Format::Table => {
                    println!("lease {id:016x} granted with TTL({ttl}s)")
                }
            }
        }
        LeaseCommand::Revoke { id } => {
            let id = parse_lease(&id)?;
            timed(timeout, client.lease_revoke(id)).await?;
            match format {
                Format::Json => output::print_json(&json!({ "header": output::header(0) })),
                Format::Fields => fields_header(0, 0),
                Format::Simple | Format::Table => println!("lease {id:016x} revoked"),
            }
        }
        LeaseCommand::KeepAlive { id, once } => {
            let id = parse_lease(&id)?;
            let mut sigint = crate::cli::sigint_stream()?;
            loop {
                let ttl = timed(timeout, client.lease_keep_alive_once(id)).await?;
                // As etcdctl: for --once, a lease gone is a lost connection
                // (2); kept alive, its end is news, and the command is done.
                if ttl <= 0 {
                    if once {
                        return Err(Failure::new(
                            Failure::BAD_CONNECTION,
                            format!("lease {id:016x} expired or revoked"),
                        ));
                    }
                    println!("lease {id:016x} expired or revoked.");
                    return Ok(());
                }
                match format {
                    Format::Json => output::print_json(&json!({ "ID": id, "TTL": ttl })),
                    Format::Fields => {
                        fields_header(0, 0);
                        println!("\"ID\" : {id}");
                        println!("\"TTL\" : {ttl}");
                    }
                    Format::Simple | Format::Table => {
                        println!("lease {id:016x} keepalived with TTL({ttl})")
                    }
                }
                if once {
                    return Ok(());
                }
                let period = Duration::from_millis((ttl as u64 * 1000 / 3).max(100));
                tokio::select! {
                    _ = tokio::time::sleep(period) => {}
                    _ = sigint.recv() => return Err(Failure::sigint()),
                }
            }
        }
        LeaseCommand::Timetolive { id, keys } => {
            let id = parse_lease(&id)?;
            let answer = timed(timeout, client.lease_time_to_live(id, keys)).await?;
            match format {
                Format::Simple | Format::Table if answer.ttl < 0 => {
                    println!("lease {id:016x} already expired")
                }
                Format::Simple | Format::Table => {
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
                Format::Json => {
                    // Go's encoding of a nil list: null.
                    let keys = if answer.keys.is_empty() {
                        serde_json::Value::Null
                    } else {
                        json!(answer
                            .keys
                            .iter()
                            .map(|k| output::base64(k))
                            .collect::<Vec<_>>())
                    };
                    output::print_json(&json!({
                        "id": id,
                        "ttl": answer.ttl,
                        "granted-ttl": answer.granted_ttl,
                        "keys": keys,
                    }))
                }
                Format::Fields => {
                    fields_header(0, 0);
                    println!("\"ID\" : {id}");
                    println!("\"TTL\" : {}", answer.ttl);
                    println!("\"GrantedTTL\" : {}", answer.granted_ttl);
                    for key in &answer.keys {
                        println!("\"Key\" : {}", go_quote(key));
                    }
                }
            }
        }
        LeaseCommand::List => {
            let leases = timed(timeout, client.lease_leases()).await?;
            match format {
                Format::Simple | Format::Table => {
                    println!("found {} leases", leases.len());
                    for lease in &leases {
                        println!("{:016x}", lease.id);
                    }
                }
                Format::Json => output::print_json(&json!({
                    "leases": leases.iter().map(|l| json!({ "id": l.id })).collect::<Vec<_>>(),
                })),
                Format::Fields => {
                    fields_header(0, 0);
                    for lease in &leases {
                        println!("\"ID\" : {}", lease.id);
                    }
                }
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

/// Waits for `turn` (a lock, a leadership) while the session lives. If it
/// fails, is interrupted (SIGINT, SIGTERM: `interrupted_while` says what
/// was waited for) or the session is lost, the session's lease is revoked,
/// which takes this contender's key out of the line (as etcdctl cleans up).
async fn wait_for_turn<T>(
    client: &Client,
    timeout: Duration,
    keep_alive: &mut keel_client::KeepAlive,
    turn: impl std::future::Future<Output = keel_client::Result<T>>,
    interrupted_while: &str,
) -> Result<T, Failure> {
    let waited = tokio::select! {
        turn = turn => turn.map_err(describe),
        () = interrupted() => Err(format!("interrupted while {interrupted_while}")),
        lost = keep_alive.lost() => Err(describe(lost)),
    };
    if waited.is_err() {
        let _ = timed(timeout, client.lease_revoke(keep_alive.id())).await;
    }
    waited.map_err(Failure::from)
}

/// Takes the lock `name`. With a command, runs it holding the lock (and
/// prints nothing of its own); without one, prints the lock's key as
/// etcdctl does (as a get prints it: the key, then its empty value) and
/// holds it until interrupted.
pub(crate) async fn lock(
    client: &Client,
    timeout: Duration,
    format: Format,
    name: &str,
    ttl: i64,
    command: Vec<String>,
) -> CommandResult {
    let mut keep_alive = session(client, timeout, ttl).await?;
    let lease = keep_alive.id();
    let taking = client.lock(name, lease);
    let guard = wait_for_turn(
        client,
        timeout,
        &mut keep_alive,
        taking,
        "waiting for the lock",
    )
    .await?;
    let holding = match command.split_first() {
        Some((program, arguments)) => {
            // The command learns what it holds (KEEL_LOCK_KEY and
            // KEEL_LOCK_REV, and etcdctl's names for scripts written for
            // it), and is stopped if the lease is lost while it runs.
            let key = String::from_utf8_lossy(guard.key()).into_owned();
            let revision = guard.revision().to_string();
            let child = tokio::process::Command::new(program)
                .args(arguments)
                .env("KEEL_LOCK_KEY", &key)
                .env("KEEL_LOCK_REV", &revision)
                .env("ETCD_LOCK_KEY", &key)
                .env("ETCD_LOCK_REV", &revision)
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
        None => {
            print_holder(format, guard.key(), guard.revision(), lease);
            tokio::select! {
                () = interrupted() => Ok(()),
                lost = keep_alive.lost() => Err(describe(lost)),
            }
        }
    };
    drop(keep_alive);
    // Revoking the session's lease deletes the lock's key: the lock is
    // released whatever happened while it was held.
    let released = timed(timeout, client.lease_revoke(lease)).await;
    holding.and(released).map_err(Failure::from)
}

/// The holder's key of a lock or election, as etcdctl prints it: as a get
/// of that key prints it.
fn print_holder(format: Format, key: &[u8], revision: u64, lease: i64) {
    let kv = keel_client::proto::KeyValue {
        key: key.to_vec(),
        create_revision: revision,
        mod_revision: revision,
        version: 1,
        value: Vec::new(),
        lease,
    };
    match format {
        Format::Json => output::print_json(&json!({
            "header": output::header(revision),
            "kvs": [output::kv_json(&kv)],
            "count": 1,
        })),
        _ => output::print_kv(&kv, false),
    }
}

pub(crate) async fn elect(
    client: &Client,
    timeout: Duration,
    _format: Format,
    name: &str,
    proposal: Option<String>,
    listen: bool,
    ttl: i64,
) -> CommandResult {
    if listen {
        let mut interrupts = crate::cli::Interrupts::new()?;
        let mut observer = client.observe(name).await.map_err(describe)?;
        loop {
            // As etcdctl: an observer stopped by a signal has done its job.
            let leader = tokio::select! {
                leader = observer.next() => leader.map_err(describe)?,
                () = interrupts.next() => return Ok(()),
            };
            println!("{}", output::text(&leader.key));
            println!("{}", output::text(&leader.value));
        }
    }
    let proposal =
        proposal.ok_or_else(|| Failure::bad_args("no proposal argument but -l not set"))?;
    let mut keep_alive = session(client, timeout, ttl).await?;
    let lease = keep_alive.id();
    let campaign = client.campaign(name, lease, &proposal);
    let leadership =
        wait_for_turn(client, timeout, &mut keep_alive, campaign, "campaigning").await?;
    println!("{}", output::text(leadership.key()));
    println!("{proposal}");
    tokio::select! {
        () = interrupted() => {}
        lost = keep_alive.lost() => return Err(describe(lost).into()),
    }
    timed(timeout, client.resign(leadership)).await?;
    let _ = client.lease_revoke(lease).await;
    Ok(())
}

/// Resolves at SIGINT (Ctrl-C) or SIGTERM from now on; never, if they
/// cannot be listened for.
async fn interrupted() {
    match crate::cli::Interrupts::new() {
        Ok(mut interrupts) => interrupts.next().await,
        Err(_) => std::future::pending().await,
    }
}
