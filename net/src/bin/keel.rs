//! The keel server: `keel [--data-dir DIR] [--listen-client ADDR] ...`.
//! Settings come from the defaults, then `--config FILE` (TOML), then the
//! flags; see `keel --help` and docs/server.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use keel_net::server::{Overrides, Server, ServerConfig};
use signal_hook::consts::{SIGINT, SIGTERM};

/// mimalloc: its thread-local free lists suit one thread per core, and
/// decoded B+-tree nodes and requests allocate and free small blocks by the
/// million (glibc malloc took about a sixth of the server's CPU at full
/// write load; see docs/bench.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A strongly consistent, replicated key-value store, one Raft group per
/// core.
#[derive(Debug, Parser)]
#[command(name = "keel", version, args_conflicts_with_subcommands = true)]
struct Flags {
    #[command(subcommand)]
    command: Option<KeelCommand>,
    /// A TOML file of settings (keys as in docs/server.md: name, data_dir,
    /// client_address, core_port_base, shards, cores, pin,
    /// quota_backend_bytes, outbound_bytes, stall_timeout_ms, max_in_flight,
    /// max_watches, watch_progress_interval_ms, inbound_bytes,
    /// frame_timeout_ms, max_connections, answer_bytes, idle_timeout_ms,
    /// initial_cluster, initial_cluster_token, initial_cluster_state,
    /// listen_peer, advertise_peer, snapshot_send_mib_per_sec,
    /// etcd_version, listen_metrics, metrics_tls, corrupt_check_interval_ms,
    /// cert_file, key_file, trusted_ca_file, client_cert_auth, and the
    /// same four with peer_ before them, auth_token_ttl, bcrypt_cost,
    /// auth_token).
    #[arg(long)]
    config: Option<PathBuf>,
    /// This member's name.
    #[arg(long)]
    name: Option<String>,
    /// The data directory [default: keel-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Where every core accepts clients [default: 127.0.0.1:2379]; port 0
    /// picks a free one.
    #[arg(long)]
    listen_client: Option<SocketAddr>,
    /// Core i also listens on this port + i [default: 2390]; 0 picks free
    /// ports.
    #[arg(long)]
    core_port_base: Option<u16>,
    /// Shards of a new data directory [default: one per core].
    #[arg(long)]
    shards: Option<usize>,
    /// Cores to run on [default: all].
    #[arg(long)]
    cores: Option<usize>,
    /// Do not pin each core's thread to its CPU.
    #[arg(long)]
    no_pin: bool,
    /// Bytes the shards' trees may hold in use together before a NOSPACE
    /// alarm refuses writes that take space, as etcd's flag [default: 64
    /// GiB].
    #[arg(long)]
    quota_backend_bytes: Option<u64>,
    /// Bytes of responses queued per connection before watches wait; also
    /// the largest answer, and a connection's room for large answers
    /// [default: 8 MiB].
    #[arg(long)]
    outbound_bytes: Option<usize>,
    /// Milliseconds a response waits for room before the connection is
    /// closed as a client that stopped reading [default: 10000].
    #[arg(long)]
    stall_timeout_ms: Option<u64>,
    /// Requests in flight per connection, watches apart [default: 4096].
    #[arg(long)]
    max_in_flight: Option<usize>,
    /// Watches open per connection [default: 100000].
    #[arg(long)]
    max_watches: Option<usize>,
    /// Milliseconds between progress notifications of an idle watch that
    /// asked for them [default: 600000].
    #[arg(long)]
    watch_progress_interval_ms: Option<u64>,
    /// Bytes of requests, partly read or not yet answered, that one core's
    /// connections may hold together [default: 64 MiB].
    #[arg(long)]
    inbound_bytes: Option<usize>,
    /// Milliseconds a request frame may take to arrive once its length
    /// came, before the connection is closed [default: 10000].
    #[arg(long)]
    frame_timeout_ms: Option<u64>,
    /// Connections one core serves at once [default: 16384].
    #[arg(long)]
    max_connections: Option<usize>,
    /// Bytes of large answers (ranges past 16 KiB, transactions, answers
    /// with previous values, lease lists) that one core's connections may
    /// hold together, from before they are read until they are written
    /// [default: 64 MiB].
    #[arg(long)]
    answer_bytes: Option<usize>,
    /// Milliseconds a connection with nothing in flight and no watch may
    /// stay silent before it is closed; 0 never closes it [default: 0].
    #[arg(long)]
    idle_timeout_ms: Option<u64>,
    /// Every member of a new cluster, as etcd's flag: `name=host:port,...`
    /// (peer addresses; `http://` is accepted and ignored). Without it the
    /// member is a cluster of one that no member can join; with only
    /// itself, a cluster of one that members can join (`member add`). For
    /// `--initial-cluster-state existing`: the members to ask for the
    /// cluster (what `keelctl member add` printed).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Tells apart clusters with the same members [default: keel-cluster].
    #[arg(long)]
    initial_cluster_token: Option<String>,
    /// `new` to create the cluster, `existing` to join a running one after
    /// `keelctl member add` [default: new].
    #[arg(long)]
    initial_cluster_state: Option<String>,
    /// Where core 0 takes connections from peers; core i listens on this
    /// port + i [default: 127.0.0.1:2380].
    #[arg(long)]
    listen_peer: Option<SocketAddr>,
    /// The peer address the other members reach this one at, when not
    /// --listen-peer (a proxy stands between); it must be this member's
    /// address in --initial-cluster.
    #[arg(long)]
    advertise_peer: Option<SocketAddr>,
    /// MiB per second one core sends snapshots to followers at, all
    /// together (a new member's catch-up); 0 is no limit, else at least 8
    /// [default: 256].
    #[arg(long)]
    snapshot_send_mib_per_sec: Option<u64>,
    /// The etcd version etcd's API reports (Status, /version), which
    /// etcd's clients check before they use a feature [default: 3.6.0].
    #[arg(long)]
    etcd_version: Option<String>,
    /// Where to serve `/metrics` (Prometheus' text format) and `/health`,
    /// as etcd's `--listen-metrics-urls`: `host:port` or `http://host:port`
    /// for plain HTTP, `https://host:port` for TLS with the client port's
    /// certificate [default: none; the client port serves `/metrics` too].
    #[arg(long, alias = "listen-metrics-urls", value_parser = metrics_address)]
    listen_metrics: Option<MetricsUrl>,
    /// How log lines are written to stderr: `text` for people, `json` (one
    /// object per line, with the shard, member and term of every Raft
    /// event) for log collectors.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Milliseconds between two checks of a shard for corruption: its
    /// leader compares every member's hash of it, and a member whose copy
    /// differs gets a CORRUPT alarm; 0 never checks [default: 300000].
    #[arg(long)]
    corrupt_check_interval_ms: Option<u64>,
    /// The client port's PEM certificate: with it, the client port, the
    /// core ports (and an https metrics port) take TLS only.
    #[arg(long)]
    cert_file: Option<PathBuf>,
    /// The private key of --cert-file.
    #[arg(long)]
    key_file: Option<PathBuf>,
    /// The authorities that sign clients' certificates: with it, clients
    /// must show one (as etcd).
    #[arg(long)]
    trusted_ca_file: Option<PathBuf>,
    /// Clients must show a certificate signed by --trusted-ca-file; its
    /// common name is their user when auth is on and they send no token.
    #[arg(long)]
    client_cert_auth: bool,
    /// The peer port's PEM certificate, also shown to the other members
    /// when connecting to them: with it, members speak TLS only.
    #[arg(long)]
    peer_cert_file: Option<PathBuf>,
    /// The private key of --peer-cert-file.
    #[arg(long)]
    peer_key_file: Option<PathBuf>,
    /// The authorities that sign members' certificates: a member whose
    /// certificate another one signed is refused, both ways.
    #[arg(long)]
    peer_trusted_ca_file: Option<PathBuf>,
    /// Members must show a certificate signed by --peer-trusted-ca-file
    /// (already so once it is given).
    #[arg(long)]
    peer_client_cert_auth: bool,
    /// Seconds a token from Authenticate works (etcd's
    /// --auth-token-ttl) [default: 300].
    #[arg(long)]
    auth_token_ttl: Option<u64>,
    /// bcrypt's cost for new passwords, 4 to 31 (etcd's --bcrypt-cost)
    /// [default: 10].
    #[arg(long)]
    bcrypt_cost: Option<u32>,
    /// Tokens, as etcd's --auth-token: `simple` (signed with the
    /// cluster's secret), or `jwt,pub-key=P,priv-key=K,sign-method=M
    /// [,ttl=5m]` (RS/PS/ES/HS methods) [default: simple].
    #[arg(long)]
    auth_token: Option<String>,
}

/// `--listen-metrics`'s value.
#[derive(Debug, Clone, Copy)]
struct MetricsUrl {
    address: SocketAddr,
    https: bool,
}

/// What keel does besides serving.
#[derive(Debug, clap::Subcommand)]
enum KeelCommand {
    /// Builds a new member's data directory from a snapshot
    /// (`keelctl snapshot save`), as `etcdutl snapshot restore`: run it
    /// for every member of the new cluster with the same file and
    /// --initial-cluster, then start each with its --name and the same
    /// --initial-cluster. The cluster gets every key, lease and revision
    /// back; a damaged or truncated file is refused.
    Restore(RestoreFlags),
}

/// `keel restore`'s flags.
#[derive(Debug, clap::Args)]
struct RestoreFlags {
    /// The snapshot file.
    file: PathBuf,
    /// The new member's data directory (must not exist, or be empty)
    /// [default: keel-data].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// The new member's name.
    #[arg(long)]
    name: Option<String>,
    /// Every member of the new cluster, as when starting it:
    /// `name=host:port,...` (peer addresses).
    #[arg(long)]
    initial_cluster: Option<String>,
    /// Tells apart clusters with the same members [default: keel-cluster].
    #[arg(long)]
    initial_cluster_token: Option<String>,
}

impl RestoreFlags {
    fn run(self) -> ExitCode {
        let overrides = Overrides {
            name: self.name,
            data_dir: self.data_dir,
            initial_cluster: self.initial_cluster,
            initial_cluster_token: self.initial_cluster_token,
            ..Overrides::default()
        };
        match keel_net::restore::restore_file(&self.file, overrides) {
            Ok((config, restored)) => {
                println!(
                    "restored {} keys and {} leases into {} for member {}{}",
                    restored.pairs,
                    restored.leases,
                    config.data_dir.display(),
                    config.name,
                    if restored.leases_dropped > 0 {
                        format!(
                            " ({} keys whose lease was revoked while the snapshot was taken have no lease)",
                            restored.leases_dropped
                        )
                    } else {
                        String::new()
                    }
                );
                ExitCode::SUCCESS
            }
            Err(error) => {
                eprintln!("Error: {error}");
                ExitCode::FAILURE
            }
        }
    }
}

/// `--log-format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// An address, with or without etcd's `http://` or `https://`.
fn metrics_address(text: &str) -> Result<MetricsUrl, String> {
    let (https, bare) = match text.strip_prefix("https://") {
        Some(bare) => (true, bare),
        None => (false, text.strip_prefix("http://").unwrap_or(text)),
    };
    let bare = bare.strip_suffix('/').unwrap_or(bare);
    let address = bare
        .parse()
        .map_err(|e| format!("{text}: {e} (give host:port, such as 127.0.0.1:2381)"))?;
    Ok(MetricsUrl { address, https })
}

impl Flags {
    fn overrides(&self) -> Overrides {
        Overrides {
            name: self.name.clone(),
            data_dir: self.data_dir.clone(),
            client_address: self.listen_client,
            core_port_base: self.core_port_base,
            shards: self.shards,
            cores: self.cores,
            pin: self.no_pin.then_some(false),
            quota_backend_bytes: self.quota_backend_bytes,
            outbound_bytes: self.outbound_bytes,
            stall_timeout_ms: self.stall_timeout_ms,
            max_in_flight: self.max_in_flight,
            max_watches: self.max_watches,
            watch_progress_interval_ms: self.watch_progress_interval_ms,
            inbound_bytes: self.inbound_bytes,
            frame_timeout_ms: self.frame_timeout_ms,
            max_connections: self.max_connections,
            answer_bytes: self.answer_bytes,
            idle_timeout_ms: self.idle_timeout_ms,
            initial_cluster: self.initial_cluster.clone(),
            initial_cluster_token: self.initial_cluster_token.clone(),
            initial_cluster_state: self.initial_cluster_state.clone(),
            listen_peer: self.listen_peer,
            advertise_peer: self.advertise_peer,
            snapshot_send_mib_per_sec: self.snapshot_send_mib_per_sec,
            etcd_version: self.etcd_version.clone(),
            listen_metrics: self.listen_metrics.map(|url| url.address),
            metrics_tls: self.listen_metrics.map(|url| url.https),
            corrupt_check_interval_ms: self.corrupt_check_interval_ms,
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            trusted_ca_file: self.trusted_ca_file.clone(),
            client_cert_auth: self.client_cert_auth.then_some(true),
            peer_cert_file: self.peer_cert_file.clone(),
            peer_key_file: self.peer_key_file.clone(),
            peer_trusted_ca_file: self.peer_trusted_ca_file.clone(),
            peer_client_cert_auth: self.peer_client_cert_auth.then_some(true),
            auth_token_ttl: self.auth_token_ttl,
            bcrypt_cost: self.bcrypt_cost,
            auth_token: self.auth_token.clone(),
        }
    }
}

fn config(flags: &Flags) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::default();
    if let Some(path) = &flags.config {
        config = Overrides::from_file(path)
            .and_then(|file| file.apply(config))
            .map_err(|e| e.to_string())?;
    }
    flags.overrides().apply(config).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    let huge_pages_off = disable_transparent_huge_pages();
    let mut flags = Flags::parse();
    if let Some(KeelCommand::Restore(restore)) = flags.command.take() {
        return restore.run();
    }
    keel_net::logging::start(match flags.log_format {
        LogFormat::Text => keel_net::logging::LogFormat::Text,
        LogFormat::Json => keel_net::logging::LogFormat::Json,
    });
    let config = match config(&flags) {
        Ok(config) => config,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    if let Err(error) = huge_pages_off {
        tracing::warn!(%error, "cannot turn transparent huge pages off for this process");
    }
    // Before any executor thread starts, so that the signals come here.
    let mut signals = match signal_hook::iterator::Signals::new([SIGINT, SIGTERM]) {
        Ok(signals) => signals,
        Err(error) => {
            tracing::error!(%error, "cannot handle signals");
            return ExitCode::FAILURE;
        }
    };
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        data_dir = %config.data_dir.display(),
        "starting"
    );
    let metrics_tls = config.metrics_tls;
    let server = match Server::start(config) {
        Ok(server) => server,
        Err(error) => {
            tracing::error!("{error}");
            return ExitCode::FAILURE;
        }
    };
    let core_ports: Vec<String> = server
        .core_addresses()
        .iter()
        .map(|a| a.port().to_string())
        .collect();
    // One line on stdout that scripts (and the end-to-end tests) read.
    println!(
        "keel: listening on {} (core ports {})",
        server.client_address(),
        core_ports.join(",")
    );
    if let Some(metrics) = server.metrics_address() {
        // Not println!: a reader that stopped reading must not stop keel.
        use std::io::Write;
        let scheme = if metrics_tls { "https" } else { "http" };
        let _ = writeln!(
            std::io::stdout(),
            "keel: metrics on {scheme}://{metrics}/metrics"
        );
    }
    let signal = signals.forever().next();
    tracing::info!(?signal, "shutting down");
    server.shutdown();
    tracing::info!("stopped cleanly");
    ExitCode::SUCCESS
}

/// Turns transparent huge pages off for this process (its threads and
/// their children), before the heap grows. With them on (Linux's "always"),
/// the first touch of fresh heap makes the kernel zero a whole 2 MiB page
/// on the core that touched it, while that core's connections and shards
/// wait: under a flood of large frames and answers this took half and more
/// of each core, and another client's slowest put was two to three times
/// slower (docs/server.md, "Known limits"). keel's own heap is small; the
/// tree files are mapped files, which this does not touch.
#[allow(unsafe_code)] // prctl: no safe wrapper in std
fn disable_transparent_huge_pages() -> std::io::Result<()> {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and changes
    // nothing but how this process's future page faults are served.
    let status = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if status == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
