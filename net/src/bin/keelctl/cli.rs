//! The commands and their flags.

use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};
use keel_client::Client;

use crate::output::Format;

/// A command-line client for keel, shaped like etcdctl.
#[derive(Debug, Parser)]
#[command(name = "keelctl", version)]
pub(crate) struct Cli {
    /// Servers to try, comma-separated (`host:port`, or etcdctl's
    /// `http://host:port`); also from `KEELCTL_ENDPOINTS` or etcdctl's
    /// `ETCDCTL_ENDPOINTS`.
    #[arg(
        long,
        global = true,
        env = "KEELCTL_ENDPOINTS",
        default_value = "127.0.0.1:2379"
    )]
    pub(crate) endpoints: String,
    /// Verify the servers' certificates with these authorities (PEM),
    /// over TLS; also from `KEELCTL_CACERT` or `ETCDCTL_CACERT`.
    #[arg(long, id = "tls-cacert", global = true, env = "KEELCTL_CACERT")]
    pub(crate) cacert: Option<std::path::PathBuf>,
    /// This client's certificate (PEM), for servers that ask for one;
    /// also from `KEELCTL_CERT` or `ETCDCTL_CERT`.
    #[arg(long, id = "tls-cert", global = true, env = "KEELCTL_CERT")]
    pub(crate) cert: Option<std::path::PathBuf>,
    /// The user, `name` or `name:password` (etcdctl's); also from
    /// `KEELCTL_USER` or `ETCDCTL_USER`.
    #[arg(long, id = "auth-user", global = true, env = "KEELCTL_USER")]
    pub(crate) user: Option<String>,
    /// The user's password, instead of after the colon; also from
    /// `KEELCTL_PASSWORD` or `ETCDCTL_PASSWORD`.
    #[arg(long, id = "auth-password", global = true, env = "KEELCTL_PASSWORD")]
    pub(crate) password: Option<String>,
    /// The private key of --cert; also from `KEELCTL_KEY` or `ETCDCTL_KEY`.
    #[arg(long, id = "tls-key", global = true, env = "KEELCTL_KEY")]
    pub(crate) key: Option<std::path::PathBuf>,
    /// Output format.
    #[arg(
        short = 'w',
        long = "write-out",
        global = true,
        value_enum,
        default_value = "simple"
    )]
    pub(crate) format: Format,
    /// How long to wait for a connection and each answer, as etcdctl's
    /// (`5s`, `500ms`, `1m`; a bare number is seconds); not for watch,
    /// lock, elect or keep-alive, which wait as long as they run.
    #[arg(long, global = true, default_value = "5s", value_parser = parse_duration)]
    pub(crate) command_timeout: Duration,
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Puts a key (the value is read from stdin when not given).
    Put(PutArgs),
    /// Gets a key or a range of keys.
    Get(GetArgs),
    /// Deletes a key or a range of keys.
    Del(DelArgs),
    /// Runs a transaction read from stdin (etcdctl's syntax): compares, a
    /// blank line, success operations, a blank line, failure operations.
    Txn {
        /// Prompt for each part.
        #[arg(short, long)]
        interactive: bool,
    },
    /// Watches a key or range and prints its events.
    Watch(WatchArgs),
    /// Lease commands.
    #[command(subcommand)]
    Lease(LeaseCommand),
    /// Takes a lock, prints its key, and holds it until interrupted (or
    /// until a given command exits).
    Lock {
        /// The lock's name.
        name: String,
        /// The session's lease TTL, seconds (etcdctl's default).
        #[arg(long, default_value_t = 10)]
        ttl: i64,
        /// A command to run while holding the lock.
        #[arg(trailing_var_arg = true)]
        command: Vec<String>,
    },
    /// Campaigns in an election with a proposal and holds leadership until
    /// interrupted; with --listen, prints each leader instead.
    Elect {
        /// The election's name.
        name: String,
        /// The value to lead with.
        proposal: Option<String>,
        /// Observe the election instead of campaigning.
        #[arg(short, long)]
        listen: bool,
        /// The session's lease TTL, seconds.
        #[arg(long, default_value_t = 60)]
        ttl: i64,
    },
    /// Compacts history below a revision.
    Compaction {
        /// The revision.
        revision: u64,
        /// Accepted as etcdctl's: keel's answer comes once the compaction
        /// is applied; the space of the history it removes is reused in
        /// the background, in bounded steps.
        #[arg(long)]
        physical: bool,
    },
    /// Endpoint commands.
    #[command(subcommand)]
    Endpoint(EndpointCommand),
    /// Member commands.
    #[command(subcommand)]
    Member(MemberCommand),
    /// User commands (etcd's auth: users with passwords and roles).
    #[command(subcommand)]
    User(crate::auth::UserCommand),
    /// Role commands (permissions on keys, prefixes and ranges).
    #[command(subcommand)]
    Role(crate::auth::RoleCommand),
    /// Turns auth on or off.
    #[command(subcommand)]
    Auth(crate::auth::AuthCommand),
    /// Snapshot commands: save one of a running cluster, or look at one
    /// (`keel restore` builds members from it).
    #[command(subcommand)]
    Snapshot(SnapshotCommand),
    /// Alarm commands (NOSPACE: the backend quota is exceeded, or the disk
    /// is full; CORRUPT: a member's copy of a shard differs from the
    /// others').
    #[command(subcommand)]
    Alarm(AlarmCommand),
    /// Moves leadership to a member and keeps it there: of one shard with
    /// --shard, else of every shard the endpoint's member leads (as
    /// etcdctl's move-leader moves its one leader). --unpin lets the
    /// shard (every shard, without --shard) follow the spread again.
    MoveLeader {
        /// The member to lead (hex id, as `member list` shows it).
        target: Option<String>,
        /// Only this shard.
        #[arg(long)]
        shard: Option<u32>,
        /// Let leadership follow the spread again instead.
        #[arg(long)]
        unpin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum SnapshotCommand {
    /// Saves every shard at one revision, with the leases, from the first
    /// endpoint into FILE (checksummed; written whole before it is named
    /// FILE).
    Save {
        /// Where to write it.
        file: std::path::PathBuf,
    },
    /// Checks FILE and prints its hash, revision, keys and size (and its
    /// shards and leases with -w table or json).
    Status {
        /// The snapshot file.
        file: std::path::PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum AlarmCommand {
    /// Lists the alarms raised.
    List,
    /// Clears every alarm raised (free space first: with none, the next
    /// write that takes space raises NOSPACE again).
    Disarm,
}

#[derive(Debug, Args)]
pub(crate) struct PutArgs {
    pub(crate) key: String,
    pub(crate) value: Option<String>,
    /// Attach the key to this lease (hex).
    #[arg(long)]
    pub(crate) lease: Option<String>,
    /// Print the previous value.
    #[arg(long)]
    pub(crate) prev_kv: bool,
    /// Keep the current value.
    #[arg(long)]
    pub(crate) ignore_value: bool,
    /// Keep the current lease.
    #[arg(long)]
    pub(crate) ignore_lease: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum SortBy {
    Key,
    Version,
    Create,
    Modify,
    Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Order {
    Ascend,
    Descend,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Consistency {
    /// Linearizable.
    L,
    /// Serializable.
    S,
}

/// A key, or a range given by an end, `--prefix` or `--from-key`.
#[derive(Debug, Args)]
pub(crate) struct KeyRange {
    pub(crate) key: String,
    /// The end of the range (exclusive).
    pub(crate) range_end: Option<String>,
    /// Every key starting with KEY.
    #[arg(long)]
    pub(crate) prefix: bool,
    /// Every key from KEY on.
    #[arg(long)]
    pub(crate) from_key: bool,
}

#[derive(Debug, Args)]
pub(crate) struct GetArgs {
    #[command(flatten)]
    pub(crate) range: KeyRange,
    /// Read at this revision.
    #[arg(long, default_value_t = 0)]
    pub(crate) rev: u64,
    /// Most keys to return.
    #[arg(long, default_value_t = 0)]
    pub(crate) limit: u64,
    /// Leave values out.
    #[arg(long)]
    pub(crate) keys_only: bool,
    /// Print only the count.
    #[arg(long)]
    pub(crate) count_only: bool,
    /// Print only values.
    #[arg(long)]
    pub(crate) print_value_only: bool,
    /// Sort by (any case, as etcdctl's `--sort-by=VALUE`).
    #[arg(long, value_enum, ignore_case = true)]
    pub(crate) sort_by: Option<SortBy>,
    /// Sort order (any case, as etcdctl's `--order=DESCEND`).
    #[arg(long, value_enum, ignore_case = true)]
    pub(crate) order: Option<Order>,
    /// Linearizable (l) or serializable (s).
    #[arg(long, value_enum, ignore_case = true, default_value = "l")]
    pub(crate) consistency: Consistency,
}

#[derive(Debug, Args)]
pub(crate) struct DelArgs {
    #[command(flatten)]
    pub(crate) range: KeyRange,
    /// Print the deleted pairs.
    #[arg(long)]
    pub(crate) prev_kv: bool,
}

#[derive(Debug, Args)]
pub(crate) struct WatchArgs {
    #[command(flatten)]
    pub(crate) range: KeyRange,
    /// Start at this revision (0: from now on).
    #[arg(long, default_value_t = 0)]
    pub(crate) rev: u64,
    /// Print the previous value of each event.
    #[arg(long)]
    pub(crate) prev_kv: bool,
    /// Ask for progress notifications.
    #[arg(long)]
    pub(crate) progress_notify: bool,
    /// Exit after this many events (0: run until interrupted).
    #[arg(long, default_value_t = 0)]
    pub(crate) count: usize,
}

#[derive(Debug, Subcommand)]
pub(crate) enum LeaseCommand {
    /// Grants a lease of TTL seconds.
    Grant {
        /// Read here, not by clap: a bad one is etcdctl's bad argument.
        ttl: String,
        /// Ask for this id (hex) instead of one the server picks.
        #[arg(long)]
        id: Option<String>,
    },
    /// Revokes a lease and deletes its keys.
    Revoke { id: String },
    /// Keeps a lease alive until interrupted.
    KeepAlive {
        id: String,
        /// Renew once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Shows a lease's remaining time.
    Timetolive {
        id: String,
        /// List its keys.
        #[arg(long)]
        keys: bool,
    },
    /// Lists every lease.
    List,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EndpointCommand {
    /// The server's version, shards and their Raft state.
    Status {
        /// Ask every endpoint given, one row per member and shard: its
        /// leader, term, last, committed and applied index.
        #[arg(long)]
        cluster: bool,
    },
    /// Whether the endpoint answers a linearizable read.
    Health,
    /// The hash of the keyspace at one revision (etcd's HashKV): members
    /// that applied the same writes print the same hash. With --cluster,
    /// every endpoint given is asked at the first one's revision, and the
    /// command fails naming the endpoints whose hash differs.
    Hashkv {
        /// Ask every endpoint given.
        #[arg(long)]
        cluster: bool,
        /// The revision to hash at [default: the first endpoint's current
        /// revision].
        #[arg(long, default_value_t = 0)]
        rev: i64,
        /// Hash this shard alone (keel's: the corruption check compares
        /// shards).
        #[arg(long)]
        shard: Option<u32>,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum MemberCommand {
    /// The cluster's members.
    List,
    /// Adds a member (a learner unless `--learner=false`); then start it
    /// with `--initial-cluster-state existing`.
    Add {
        /// Its name (its `--name`).
        name: String,
        /// Its peer address (`http://host:port` or `host:port`).
        #[arg(long)]
        peer_urls: String,
        /// Add it as a learner, which votes nowhere until promoted (keel's
        /// default; `--learner=false` adds a voter, which still catches up
        /// as a learner in each shard before it votes).
        #[arg(long, action = clap::ArgAction::Set, num_args = 0..=1,
              default_value_t = true, default_missing_value = "true")]
        learner: bool,
    },
    /// Removes a member for good (its id is never used again).
    Remove {
        /// The member (hex id).
        id: String,
    },
    /// Makes a learner a voter, once it has caught up.
    Promote {
        /// The member (hex id).
        id: String,
    },
    /// Changes a member's peer address.
    Update {
        /// The member (hex id).
        id: String,
        /// Its new peer address.
        #[arg(long)]
        peer_urls: String,
    },
    /// Keeps every shard's leadership off a member (before maintenance).
    Drain {
        /// The member (hex id).
        id: String,
    },
    /// Lets a drained member lead again.
    Undrain {
        /// The member (hex id).
        id: String,
    },
}

/// A duration as etcdctl takes one (Go's `time.ParseDuration`: `5s`,
/// `500ms`, `1m30s`, `1.5h`, units `ns`, `us`/`µs`, `ms`, `s`, `m`,
/// `h`); a bare number is seconds, as keelctl took before.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = |why: &str| format!("bad duration {text:?}: {why} (e.g. 5s, 500ms, 1m30s)");
    let text = text.trim();
    if text.is_empty() {
        return Err(bad("empty"));
    }
    if let Ok(seconds) = text.parse::<f64>() {
        return Duration::try_from_secs_f64(seconds).map_err(|e| bad(&e.to_string()));
    }
    let mut rest = text;
    let mut seconds = 0.0;
    while !rest.is_empty() {
        let number_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| bad("a number without a unit"))?;
        let (number, tail) = rest.split_at(number_end);
        let number: f64 = number.parse().map_err(|_| bad("expected a number"))?;
        let unit_end = tail
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_end);
        let scale = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => return Err(bad(&format!("unknown unit {unit:?}"))),
        };
        seconds += number * scale;
        rest = tail;
    }
    Duration::try_from_secs_f64(seconds).map_err(|e| bad(&e.to_string()))
}

/// A member id from its hex form (as `member list` prints them).
/// A peer address from etcd's `--peer-urls` form: one URL, its scheme
/// and a trailing slash dropped.
fn peer_address(urls: &str) -> Result<String, Failure> {
    let mut urls = urls.split(',').map(str::trim).filter(|u| !u.is_empty());
    let (Some(url), None) = (urls.next(), urls.next()) else {
        return Err(Failure::bad_args(
            "--peer-urls takes one URL (a member has one peer address)".to_string(),
        ));
    };
    let address = url.split_once("://").map_or(url, |(_, rest)| rest);
    Ok(address.trim_end_matches('/').to_string())
}

/// A membership change may wait for a shard's leader to be found.
fn member_timeout(timeout: Duration) -> Duration {
    timeout.max(Duration::from_secs(20))
}

pub(crate) fn parse_member(text: &str) -> Result<u64, Failure> {
    u64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| {
        Failure::bad_args(format!(
            "bad member ID arg ({e}: {text:?}), expecting ID in Hex"
        ))
    })
}

/// A lease id from its hex form (as etcdctl prints them); a bad one is a
/// bad argument, as in etcdctl.
pub(crate) fn parse_lease(text: &str) -> Result<i64, Failure> {
    i64::from_str_radix(text.trim_start_matches("0x"), 16).map_err(|e| {
        Failure::bad_args(format!(
            "bad lease ID arg ({e}: {text:?}), expecting ID in Hex"
        ))
    })
}

/// A failure, and the exit status etcdctl gives it (etcdctl's
/// `ctlv3/command/error.go`).
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: u8,
    /// Printed as `Error: {message}`; nothing when empty.
    pub(crate) message: String,
}

impl Failure {
    /// Any failure of a call or of the command (1).
    pub(crate) const ERROR: u8 = 1;
    /// A lost connection or lease (etcdctl's `ExitBadConnection`, 2).
    pub(crate) const BAD_CONNECTION: u8 = 2;
    /// Input that cannot be read (`ExitInvalidInput`, 3: a txn's).
    pub(crate) const INVALID_INPUT: u8 = 3;
    /// A feature not offered (`ExitBadFeature`, 4: an output format).
    pub(crate) const BAD_FEATURE: u8 = 4;
    /// A watch the server cancelled (`ExitInterrupted`, 5).
    pub(crate) const INTERRUPTED: u8 = 5;
    /// Wrong arguments (`ExitBadArgs`, 128).
    pub(crate) const BAD_ARGS: u8 = 128;
    /// Stopped by SIGINT (Ctrl-C), as a shell reports it (130).
    pub(crate) const SIGINT: u8 = 130;

    pub(crate) fn new(status: u8, message: impl Into<String>) -> Failure {
        Failure {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_args(message: impl Into<String>) -> Failure {
        Failure::new(Failure::BAD_ARGS, message)
    }

    /// Stopped by SIGINT: nothing to say.
    pub(crate) fn sigint() -> Failure {
        Failure::new(Failure::SIGINT, "")
    }

    /// etcdctl's refusal of an output format a command does not have.
    pub(crate) fn unsupported(format: Format) -> Failure {
        let name = match format {
            Format::Simple => "simple",
            Format::Json => "json",
            Format::Table => "table",
            Format::Fields => "fields",
        };
        Failure::new(
            Failure::BAD_FEATURE,
            format!("{name} not supported as output format"),
        )
    }
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure::new(Failure::ERROR, message)
    }
}

impl From<&str> for Failure {
    fn from(message: &str) -> Failure {
        Failure::new(Failure::ERROR, message)
    }
}

pub(crate) type CommandResult = Result<(), Failure>;

/// SIGINT from now on. Made once, before a command's loop: a signal that
/// comes while the loop prints or waits on the server is kept, not lost.
pub(crate) fn sigint_stream() -> Result<tokio::signal::unix::Signal, Failure> {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
        .map_err(|e| Failure::from(format!("cannot listen for SIGINT: {e}")))
}

/// SIGINT or SIGTERM from now on (see [`sigint_stream`]).
pub(crate) struct Interrupts {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Interrupts {
    pub(crate) fn new() -> Result<Interrupts, Failure> {
        let terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .map_err(|e| Failure::from(format!("cannot listen for SIGTERM: {e}")))?;
        Ok(Interrupts {
            interrupt: sigint_stream()?,
            terminate,
        })
    }

    /// Resolves at the next SIGINT or SIGTERM.
    pub(crate) async fn next(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// Bounds a call by the command timeout.
pub(crate) async fn timed<T>(
    timeout: Duration,
    call: impl std::future::Future<Output = keel_client::Result<T>>,
) -> Result<T, String> {
    match tokio::time::timeout(timeout, call).await {
        Ok(result) => result.map_err(describe),
        Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
    }
}

/// The message for a client error.
pub(crate) fn describe(error: keel_client::Error) -> String {
    match &error {
        keel_client::Error::Server { code, .. } => format!("{error} ({code:?})"),
        _ => error.to_string(),
    }
}

pub(crate) async fn run(cli: Cli) -> CommandResult {
    let connect = crate::connect::Connect::from_cli(&cli)?;
    // etcdctl's endpoints are URLs; keel's client takes host:port.
    let endpoints: Vec<&str> = cli
        .endpoints
        .split(',')
        .map(|endpoint| {
            let endpoint = endpoint.trim();
            let endpoint = endpoint
                .strip_prefix("https://")
                .or_else(|| endpoint.strip_prefix("http://"))
                .unwrap_or(endpoint);
            endpoint.trim_end_matches('/')
        })
        .collect();
    let shown = endpoints.join(",");
    let timeout = cli.command_timeout.max(Duration::from_millis(1));
    let format = cli.format;
    // Commands that need no keel connection of their own.
    match &cli.command {
        Command::Snapshot(SnapshotCommand::Status { file }) => {
            return crate::maintenance::snapshot_status(file, format);
        }
        Command::Snapshot(SnapshotCommand::Save { file }) => {
            return crate::maintenance::snapshot_save(&connect, endpoints.first().copied(), file)
                .await;
        }
        _ => {}
    }
    // Auth's commands go through etcd's gRPC Auth service.
    let first = endpoints.first().copied().unwrap_or_default();
    let command = match cli.command {
        Command::User(command) => return crate::auth::user(&connect, first, command).await,
        Command::Role(command) => return crate::auth::role(&connect, first, command).await,
        Command::Auth(command) => return crate::auth::auth(&connect, first, command).await,
        command => command,
    };
    // A login refused (a wrong password) is etcdctl's bad connection (2):
    // its client could not be made.
    let client: Client = match tokio::time::timeout(timeout, connect.client(&endpoints)).await {
        Ok(Ok(client)) => client,
        Ok(Err(error)) if error.code() == Some(keel_client::ErrorCode::AuthFailed) => {
            return Err(Failure::new(Failure::BAD_CONNECTION, describe(error)));
        }
        Ok(Err(error)) => return Err(Failure::from(describe(error))),
        Err(_) => {
            return Err(Failure::from(format!(
                "no answer within {} s",
                timeout.as_secs()
            )))
        }
    };
    match command {
        Command::User(_) | Command::Role(_) | Command::Auth(_) => Ok(()),
        Command::Put(args) => crate::kv::put(&client, timeout, format, args).await,
        Command::Get(args) => crate::kv::get(&client, timeout, format, args).await,
        Command::Del(args) => crate::kv::del(&client, timeout, format, args).await,
        Command::Txn { interactive } => {
            crate::txn::run(&client, timeout, format, interactive).await
        }
        Command::Watch(args) => crate::kv::watch(&client, format, args).await,
        Command::Compaction { revision, .. } => {
            let at = timed(timeout, client.compact(revision)).await?;
            crate::output::compacted(format, revision, at)
        }
        Command::Lease(command) => crate::sessions::lease(&client, timeout, format, command).await,
        Command::Lock { name, ttl, command } => {
            crate::sessions::lock(&client, timeout, format, &name, ttl, command).await
        }
        Command::Elect {
            name,
            proposal,
            listen,
            ttl,
        } => crate::sessions::elect(&client, timeout, format, &name, proposal, listen, ttl).await,
        Command::Endpoint(EndpointCommand::Status { cluster: false }) => {
            let status = timed(timeout, client.status()).await?;
            crate::output::status(format, &shown, &status);
            Ok(())
        }
        Command::Endpoint(EndpointCommand::Status { cluster: true }) => {
            let mut members = Vec::new();
            for endpoint in &endpoints {
                let status = async {
                    let client = connect.client(&[endpoint]).await?;
                    client.status().await
                };
                // A member that does not answer is shown as such.
                members.push((endpoint.to_string(), timed(timeout, status).await.ok()));
            }
            crate::output::cluster_status(format, &members);
            Ok(())
        }
        Command::Snapshot(_) => Ok(()),
        Command::Endpoint(EndpointCommand::Hashkv {
            cluster,
            rev,
            shard,
        }) => {
            crate::maintenance::endpoint_hashkv(
                &connect, &endpoints, cluster, rev, shard, timeout, format,
            )
            .await
        }
        Command::Endpoint(EndpointCommand::Health) => {
            let started = std::time::Instant::now();
            timed(timeout, client.get("health")).await?;
            crate::output::health(format, &shown, started.elapsed());
            Ok(())
        }
        Command::Member(MemberCommand::List) => {
            let status = timed(timeout, client.status()).await?;
            let (cluster, members) = timed(timeout, client.member_list_with_cluster()).await?;
            crate::output::members(format, cluster, status.member_id, &members);
            Ok(())
        }
        Command::Member(MemberCommand::Add {
            name,
            peer_urls,
            learner,
        }) => {
            let peer = peer_address(&peer_urls)?;
            let (cluster, _) = timed(timeout, client.member_list_with_cluster()).await?;
            let (id, members) = timed(
                member_timeout(timeout),
                client.member_add(&name, &peer, learner),
            )
            .await?;
            crate::output::member_added(cluster, id, &name, &peer, &members);
            Ok(())
        }
        Command::Member(MemberCommand::Remove { id }) => {
            let member = parse_member(&id)?;
            let (cluster, _) = timed(timeout, client.member_list_with_cluster()).await?;
            timed(member_timeout(timeout), client.member_remove(member)).await?;
            println!("Member {member:x} removed from cluster {cluster:x}");
            Ok(())
        }
        Command::Member(MemberCommand::Promote { id }) => {
            let member = parse_member(&id)?;
            let (cluster, _) = timed(timeout, client.member_list_with_cluster()).await?;
            timed(member_timeout(timeout), client.member_promote(member)).await?;
            println!("Member {member:x} promoted in cluster {cluster:x}");
            Ok(())
        }
        Command::Member(MemberCommand::Update { id, peer_urls }) => {
            let member = parse_member(&id)?;
            let peer = peer_address(&peer_urls)?;
            let (cluster, _) = timed(timeout, client.member_list_with_cluster()).await?;
            timed(member_timeout(timeout), client.member_update(member, &peer)).await?;
            println!("Member {member:x} updated in cluster {cluster:x}");
            Ok(())
        }
        Command::Alarm(command) => {
            let alarms = match command {
                AlarmCommand::List => timed(timeout, client.alarm_list()).await?,
                AlarmCommand::Disarm => timed(timeout, client.alarm_disarm()).await?,
            };
            crate::output::alarms(format, &alarms)
        }
        Command::Member(MemberCommand::Drain { id }) => {
            let member = parse_member(&id)?;
            let settled = timed(placement_timeout(timeout), client.drain(member)).await?;
            println!("Member {member:x} drained{}", not_yet(settled));
            Ok(())
        }
        Command::Member(MemberCommand::Undrain { id }) => {
            let member = parse_member(&id)?;
            timed(timeout, client.undrain(member)).await?;
            println!("Member {member:x} undrained");
            Ok(())
        }
        Command::MoveLeader {
            target,
            shard,
            unpin,
        } => {
            let which = shard.map_or("every shard".to_string(), |s| format!("shard {s}"));
            let shard = shard.unwrap_or(keel_proto::ALL_SHARDS);
            if unpin {
                timed(timeout, client.unpin_leader(shard)).await?;
                println!("Leadership of {which} follows the spread again");
                return Ok(());
            }
            let Some(target) = target else {
                return Err(Failure::bad_args(
                    "move-leader needs a target member ID (or --unpin)".to_string(),
                ));
            };
            let to = parse_member(&target)?;
            // etcdctl's line names the leader it moved from: for every
            // shard, the endpoint's member, whose shards move.
            let from = if shard == keel_proto::ALL_SHARDS {
                Some(timed(timeout, client.status()).await?.member_id)
            } else {
                None
            };
            let settled = timed(placement_timeout(timeout), client.move_leader(shard, to)).await?;
            match from {
                Some(from) => println!(
                    "Leadership transferred from {from:x} to {to:x}{}",
                    not_yet(settled)
                ),
                None => println!("Leadership of {which} moved to {to:x}{}", not_yet(settled)),
            }
            Ok(())
        }
    }
}

/// A placement change waits up to 10 s on the server for leadership to
/// get where it was sent.
fn placement_timeout(timeout: Duration) -> Duration {
    timeout.max(Duration::from_secs(15))
}

/// What a placement change that did not settle in time adds to its line.
fn not_yet(settled: bool) -> &'static str {
    if settled {
        ""
    } else {
        " (still moving: leadership goes there once the member has caught up)"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_read_as_etcdctl_writes_them() {
        let read = |text: &str| parse_duration(text).unwrap();
        assert_eq!(read("5s"), Duration::from_secs(5));
        assert_eq!(read("5"), Duration::from_secs(5));
        assert_eq!(read("500ms"), Duration::from_millis(500));
        assert_eq!(read("1.5s"), Duration::from_millis(1500));
        assert_eq!(read("2m"), Duration::from_secs(120));
        assert_eq!(read("1h"), Duration::from_secs(3600));
        assert_eq!(read("1m30s"), Duration::from_secs(90));
        assert_eq!(read("1h2m3s"), Duration::from_secs(3723));
        assert_eq!(read("250000us"), Duration::from_millis(250));
        assert_eq!(read("1000000ns"), Duration::from_millis(1));
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("1m30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("-1s").is_err());
    }
}
