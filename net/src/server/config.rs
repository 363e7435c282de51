//! How a server is set up: defaults, then an optional TOML file, then
//! command-line flags, each overriding the one before (docs/server.md).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Default first per-core port: core `i` listens on `2390 + i`.
pub const DEFAULT_CORE_PORT_BASE: u16 = 2390;

/// Everything a server needs to start.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerConfig {
    /// This member's name (shown by `member list`).
    pub name: String,
    /// The data directory.
    pub data_dir: PathBuf,
    /// Where every core accepts clients (SO_REUSEPORT); port 0 picks one.
    pub client_address: SocketAddr,
    /// Core `i` also listens on `core_port_base + i` at the client
    /// address's IP, for the shard-aware client; 0 lets the system pick
    /// each core's port.
    pub core_port_base: u16,
    /// Shards (0: as recorded, or one per core for a new directory).
    pub shards: usize,
    /// Cores (0: every core of the machine).
    pub cores: usize,
    /// Pin each core's executor to its CPU.
    pub pin: bool,
    /// Bytes the shards' trees may hold in use together before a NOSPACE
    /// alarm refuses what takes space (etcd's `--quota-backend-bytes`).
    pub quota_backend_bytes: u64,
    /// Limits that protect the server from its clients.
    pub limits: Limits,
    /// The cluster this member starts or belongs to.
    pub cluster: ClusterSettings,
    /// The etcd version keel reports through etcd's API (Status,
    /// `/version`): what etcd's clients, Kubernetes among them, check
    /// before they use a feature. `major.minor.patch`.
    pub etcd_version: String,
    /// Where the metrics endpoint listens (`/metrics` in Prometheus' text
    /// format, `/health`), as etcd's `--listen-metrics-urls`; none by
    /// default (`/metrics` is served on the client port as well).
    pub listen_metrics: Option<SocketAddr>,
    /// Whether the metrics port speaks TLS, with the client port's
    /// settings (etcd's `https://` metrics URL).
    pub metrics_tls: bool,
    /// How often each shard's leader compares every member's copy of the
    /// shard (docs/corruption.md); zero never does.
    pub corrupt_check_interval: Duration,
    /// TLS on the client port, the core ports and the metrics port
    /// (docs/security.md).
    pub client_tls: TlsSettings,
    /// TLS between members, on the peer ports.
    pub peer_tls: TlsSettings,
    /// Token lifetime and password hashing (docs/security.md, "Auth").
    pub auth: crate::auth::AuthSettings,
}

/// etcd's TLS flags for one kind of port (`--cert-file`, ... or
/// `--peer-cert-file`, ...), as given.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsSettings {
    /// The PEM certificate chain the port shows.
    pub cert_file: Option<PathBuf>,
    /// Its private key.
    pub key_file: Option<PathBuf>,
    /// The authorities whose certificates the port's clients must show.
    pub trusted_ca_file: Option<PathBuf>,
    /// Whether clients must show a certificate.
    pub client_cert_auth: bool,
}

impl TlsSettings {
    /// The port's TLS files, or `None` for plaintext.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for flags that do not go together; `what`
    /// names them (`""` or `"peer-"`).
    pub fn files(&self, what: &str) -> Result<Option<crate::tls::TlsFiles>, ConfigError> {
        match (&self.cert_file, &self.key_file) {
            (Some(cert), Some(key)) => {
                if self.client_cert_auth && self.trusted_ca_file.is_none() {
                    return Err(ConfigError::Invalid(format!(
                        "--{what}client-cert-auth needs --{what}trusted-ca-file"
                    )));
                }
                Ok(Some(crate::tls::TlsFiles {
                    cert: cert.clone(),
                    key: key.clone(),
                    trusted_ca: self.trusted_ca_file.clone(),
                    client_cert_auth: self.client_cert_auth,
                }))
            }
            (None, None) if self.trusted_ca_file.is_none() && !self.client_cert_auth => Ok(None),
            _ => Err(ConfigError::Invalid(format!(
                "TLS needs both --{what}cert-file and --{what}key-file"
            ))),
        }
    }
}

/// Time between two corruption checks of a shard, unless set: 5 minutes.
pub const DEFAULT_CORRUPT_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// The etcd version reported unless `etcd_version` says otherwise: the
/// API keel serves is 3.6's (its Status fields included).
pub const DEFAULT_ETCD_VERSION: &str = "3.6.0";

/// etcd's bootstrap flags (docs/cluster.md, "Starting a cluster").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterSettings {
    /// `name=host:port,...`: every member's name and peer address; empty
    /// for a cluster of this member alone.
    pub initial_cluster: String,
    /// Tells clusters with the same members apart.
    pub initial_cluster_token: String,
    /// `new`: the cluster is being created; `existing`: this member joins
    /// a running cluster that has it in its member list (added with
    /// `member add`), and learns the cluster from the members
    /// `initial_cluster` names (docs/membership.md, "Joining").
    pub initial_cluster_state: String,
    /// Where core 0 takes peer connections; core `c` listens on the port
    /// plus `c`.
    pub listen_peer: SocketAddr,
    /// The address the other members reach this one at, as given in the
    /// initial cluster (a proxy or NAT may stand between): `None` is
    /// `listen_peer`.
    pub advertise_peer: Option<SocketAddr>,
    /// Bytes per second one core sends snapshots at, to all followers
    /// together; 0 is no limit (docs/membership.md, "Catching up").
    pub snapshot_send_rate: u64,
}

/// The default of [`ClusterSettings::snapshot_send_rate`]: 256 MiB/s.
pub const DEFAULT_SNAPSHOT_SEND_RATE: u64 = 256 << 20;
/// The least [`ClusterSettings::snapshot_send_rate`] but none: 8 MiB/s.
pub const MIN_SNAPSHOT_SEND_RATE: u64 = 8 << 20;

impl Default for ClusterSettings {
    fn default() -> ClusterSettings {
        ClusterSettings {
            initial_cluster: String::new(),
            initial_cluster_token: keel_engine::shard::DEFAULT_TOKEN.to_string(),
            initial_cluster_state: "new".to_string(),
            listen_peer: SocketAddr::from(([127, 0, 0, 1], 2380)),
            advertise_peer: None,
            snapshot_send_rate: DEFAULT_SNAPSHOT_SEND_RATE,
        }
    }
}

impl ClusterSettings {
    /// Whether this member joins a running cluster
    /// (`--initial-cluster-state existing`).
    pub fn joins(&self) -> bool {
        self.initial_cluster_state == "existing"
    }

    /// Whether the member takes peer connections: it was given a cluster
    /// (even of itself alone), so members may join it.
    pub fn has_peers(&self) -> bool {
        !self.initial_cluster.trim().is_empty() || self.joins()
    }

    /// The cluster these settings describe, as member `name`.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] naming the problem.
    pub fn cluster(&self, name: &str) -> Result<keel_engine::shard::Cluster, ConfigError> {
        use keel_engine::shard::Cluster;
        if self.initial_cluster_state != "new" && !self.joins() {
            return Err(ConfigError::Invalid(format!(
                "initial_cluster_state {:?}: \"new\" or \"existing\"",
                self.initial_cluster_state
            )));
        }
        if self.initial_cluster.trim().is_empty() {
            return Ok(Cluster::single(name));
        }
        let initial =
            Cluster::parse_initial(&self.initial_cluster).map_err(ConfigError::Invalid)?;
        let cluster = Cluster::bootstrap(name, &initial, &self.initial_cluster_token)
            .map_err(ConfigError::Invalid)?;
        let mine = cluster
            .member(cluster.me)
            .map(|m| m.peer_address.clone())
            .unwrap_or_default();
        let advertised = self.advertise_peer.unwrap_or(self.listen_peer);
        let port = mine
            .rsplit_once(':')
            .and_then(|(_, p)| p.parse::<u16>().ok());
        if !cluster.is_single() && port != Some(advertised.port()) {
            return Err(ConfigError::Invalid(format!(
                "this member is {name}={mine} in the initial cluster, but advertises \
                 {advertised} to its peers: the ports must match"
            )));
        }
        Ok(cluster)
    }
}

/// Per-connection limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of responses one connection may hold, queued or being
    /// produced, before its producers wait: also the largest answer
    /// (docs/server.md, "Outbound memory").
    pub outbound_bytes: usize,
    /// How long a response may wait for room in a full queue before the
    /// connection is closed as a client that stopped reading.
    pub stall_timeout: Duration,
    /// Requests (watches apart) one connection may have in flight; past it
    /// the server stops reading that connection.
    pub max_in_flight: usize,
    /// Watches one connection may have open; past it a new one is refused
    /// (the connection's other requests go on).
    pub max_watches: usize,
    /// How often an idle watch that asked for progress notifications
    /// gets one (etcd's default is 10 minutes).
    pub watch_progress_interval: Duration,
    /// Bytes of requests, read in part or whole and not yet answered, that
    /// the connections of one core may hold together (docs/server.md,
    /// "Inbound memory").
    pub inbound_bytes: usize,
    /// How long a request frame may take to arrive once its length came;
    /// a connection that takes longer is closed.
    pub frame_timeout: Duration,
    /// Connections one core serves at once; it closes those past it.
    pub max_connections: usize,
    /// Bytes of large answers that the connections of one core may hold
    /// together, reserved before the request runs and held until the
    /// answer is written (docs/server.md, "Outbound memory").
    pub answer_bytes: usize,
    /// How long a connection with no request in flight and no watch may
    /// stay silent before it is closed; `None` never closes it.
    pub idle_timeout: Option<Duration>,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            outbound_bytes: 8 << 20,
            stall_timeout: Duration::from_secs(10),
            max_in_flight: 4096,
            max_watches: 100_000,
            watch_progress_interval: Duration::from_secs(600),
            inbound_bytes: 64 << 20,
            frame_timeout: Duration::from_secs(10),
            max_connections: 16_384,
            answer_bytes: 64 << 20,
            idle_timeout: None,
        }
    }
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            name: "default".to_string(),
            data_dir: PathBuf::from("keel-data"),
            // etcd's client port, on loopback only.
            client_address: SocketAddr::from(([127, 0, 0, 1], 2379)),
            core_port_base: DEFAULT_CORE_PORT_BASE,
            shards: 0,
            cores: 0,
            pin: true,
            quota_backend_bytes: keel_engine::shard::DEFAULT_QUOTA_BACKEND_BYTES,
            limits: Limits::default(),
            cluster: ClusterSettings::default(),
            etcd_version: DEFAULT_ETCD_VERSION.to_string(),
            listen_metrics: None,
            metrics_tls: false,
            corrupt_check_interval: DEFAULT_CORRUPT_CHECK_INTERVAL,
            client_tls: TlsSettings::default(),
            peer_tls: TlsSettings::default(),
            auth: crate::auth::AuthSettings::default(),
        }
    }
}

/// The settings a config file or the command line may give; each one
/// absent keeps the value from before.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    /// See [`ServerConfig::name`].
    pub name: Option<String>,
    /// See [`ServerConfig::data_dir`].
    pub data_dir: Option<PathBuf>,
    /// See [`ServerConfig::client_address`].
    pub client_address: Option<SocketAddr>,
    /// See [`ServerConfig::core_port_base`].
    pub core_port_base: Option<u16>,
    /// See [`ServerConfig::shards`].
    pub shards: Option<usize>,
    /// See [`ServerConfig::cores`].
    pub cores: Option<usize>,
    /// See [`ServerConfig::pin`].
    pub pin: Option<bool>,
    /// See [`ServerConfig::quota_backend_bytes`].
    pub quota_backend_bytes: Option<u64>,
    /// See [`Limits::outbound_bytes`].
    pub outbound_bytes: Option<usize>,
    /// See [`Limits::stall_timeout`], in milliseconds.
    pub stall_timeout_ms: Option<u64>,
    /// See [`Limits::max_in_flight`].
    pub max_in_flight: Option<usize>,
    /// See [`Limits::max_watches`].
    pub max_watches: Option<usize>,
    /// See [`Limits::watch_progress_interval`], in milliseconds.
    pub watch_progress_interval_ms: Option<u64>,
    /// See [`Limits::inbound_bytes`].
    pub inbound_bytes: Option<usize>,
    /// See [`Limits::frame_timeout`], in milliseconds.
    pub frame_timeout_ms: Option<u64>,
    /// See [`Limits::max_connections`].
    pub max_connections: Option<usize>,
    /// See [`Limits::answer_bytes`].
    pub answer_bytes: Option<usize>,
    /// See [`Limits::idle_timeout`], in milliseconds; 0 is none.
    pub idle_timeout_ms: Option<u64>,
    /// See [`ClusterSettings::initial_cluster`].
    pub initial_cluster: Option<String>,
    /// See [`ClusterSettings::initial_cluster_token`].
    pub initial_cluster_token: Option<String>,
    /// See [`ClusterSettings::initial_cluster_state`].
    pub initial_cluster_state: Option<String>,
    /// See [`ClusterSettings::listen_peer`].
    pub listen_peer: Option<SocketAddr>,
    /// See [`ClusterSettings::advertise_peer`].
    pub advertise_peer: Option<SocketAddr>,
    /// See [`ClusterSettings::snapshot_send_rate`], in MiB per second.
    pub snapshot_send_mib_per_sec: Option<u64>,
    /// See [`ServerConfig::etcd_version`].
    pub etcd_version: Option<String>,
    /// See [`ServerConfig::listen_metrics`].
    pub listen_metrics: Option<SocketAddr>,
    /// See [`ServerConfig::metrics_tls`].
    pub metrics_tls: Option<bool>,
    /// See [`ServerConfig::corrupt_check_interval`], in milliseconds; 0
    /// never checks.
    pub corrupt_check_interval_ms: Option<u64>,
    /// See [`TlsSettings::cert_file`] (client port).
    pub cert_file: Option<PathBuf>,
    /// See [`TlsSettings::key_file`] (client port).
    pub key_file: Option<PathBuf>,
    /// See [`TlsSettings::trusted_ca_file`] (client port).
    pub trusted_ca_file: Option<PathBuf>,
    /// See [`TlsSettings::client_cert_auth`] (client port).
    pub client_cert_auth: Option<bool>,
    /// See [`TlsSettings::cert_file`] (peer port).
    pub peer_cert_file: Option<PathBuf>,
    /// See [`TlsSettings::key_file`] (peer port).
    pub peer_key_file: Option<PathBuf>,
    /// See [`TlsSettings::trusted_ca_file`] (peer port).
    pub peer_trusted_ca_file: Option<PathBuf>,
    /// See [`TlsSettings::client_cert_auth`] (peer port).
    pub peer_client_cert_auth: Option<bool>,
    /// See [`crate::auth::AuthSettings::token_ttl`], in seconds.
    pub auth_token_ttl: Option<u64>,
    /// See [`crate::auth::AuthSettings::bcrypt_cost`].
    pub bcrypt_cost: Option<u32>,
    /// See [`crate::auth::AuthSettings::token`].
    pub auth_token: Option<String>,
}

/// A config file that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// It cannot be read.
    #[error("config file {path}: {error}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// It is not valid TOML, or names a setting that does not exist.
    #[error("config file {path}: {error}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// Why.
        error: toml::de::Error,
    },
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Overrides {
    /// The settings of a TOML file (keys as the field names).
    ///
    /// # Errors
    /// [`ConfigError`] naming the file and what is wrong with it.
    pub fn from_file(path: &Path) -> Result<Overrides, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|error| ConfigError::Read {
            path: path.to_path_buf(),
            error,
        })?;
        toml::from_str(&text).map_err(|error| ConfigError::Parse {
            path: path.to_path_buf(),
            error,
        })
    }

    /// `config` with every setting given here replaced.
    ///
    /// # Errors
    /// [`ConfigError::Invalid`] for a limit of zero.
    pub fn apply(self, mut config: ServerConfig) -> Result<ServerConfig, ConfigError> {
        fn set<T>(slot: &mut T, value: Option<T>) {
            if let Some(value) = value {
                *slot = value;
            }
        }
        set(&mut config.name, self.name);
        set(&mut config.data_dir, self.data_dir);
        set(&mut config.client_address, self.client_address);
        set(&mut config.core_port_base, self.core_port_base);
        set(&mut config.shards, self.shards);
        set(&mut config.cores, self.cores);
        set(&mut config.pin, self.pin);
        set(&mut config.quota_backend_bytes, self.quota_backend_bytes);
        set(&mut config.etcd_version, self.etcd_version);
        if self.listen_metrics.is_some() {
            config.listen_metrics = self.listen_metrics;
        }
        set(&mut config.metrics_tls, self.metrics_tls);
        if let Some(ms) = self.corrupt_check_interval_ms {
            config.corrupt_check_interval = Duration::from_millis(ms);
        }
        let tls = &mut config.client_tls;
        if self.cert_file.is_some() {
            tls.cert_file = self.cert_file;
        }
        if self.key_file.is_some() {
            tls.key_file = self.key_file;
        }
        if self.trusted_ca_file.is_some() {
            tls.trusted_ca_file = self.trusted_ca_file;
        }
        set(&mut tls.client_cert_auth, self.client_cert_auth);
        let tls = &mut config.peer_tls;
        if self.peer_cert_file.is_some() {
            tls.cert_file = self.peer_cert_file;
        }
        if self.peer_key_file.is_some() {
            tls.key_file = self.peer_key_file;
        }
        if self.peer_trusted_ca_file.is_some() {
            tls.trusted_ca_file = self.peer_trusted_ca_file;
        }
        set(&mut tls.client_cert_auth, self.peer_client_cert_auth);
        if let Some(seconds) = self.auth_token_ttl {
            config.auth.token_ttl = Duration::from_secs(seconds);
        }
        set(&mut config.auth.bcrypt_cost, self.bcrypt_cost);
        set(&mut config.auth.token, self.auth_token);
        let cluster = &mut config.cluster;
        set(&mut cluster.initial_cluster, self.initial_cluster);
        set(
            &mut cluster.initial_cluster_token,
            self.initial_cluster_token,
        );
        set(
            &mut cluster.initial_cluster_state,
            self.initial_cluster_state,
        );
        set(&mut cluster.listen_peer, self.listen_peer);
        if self.advertise_peer.is_some() {
            cluster.advertise_peer = self.advertise_peer;
        }
        set(
            &mut cluster.snapshot_send_rate,
            self.snapshot_send_mib_per_sec
                .map(|mib| mib.saturating_mul(1 << 20)),
        );
        let limits = &mut config.limits;
        set(&mut limits.outbound_bytes, self.outbound_bytes);
        set(
            &mut limits.stall_timeout,
            self.stall_timeout_ms.map(Duration::from_millis),
        );
        set(&mut limits.max_in_flight, self.max_in_flight);
        set(&mut limits.max_watches, self.max_watches);
        set(
            &mut limits.watch_progress_interval,
            self.watch_progress_interval_ms.map(Duration::from_millis),
        );
        set(&mut limits.inbound_bytes, self.inbound_bytes);
        set(
            &mut limits.frame_timeout,
            self.frame_timeout_ms.map(Duration::from_millis),
        );
        set(&mut limits.max_connections, self.max_connections);
        set(&mut limits.answer_bytes, self.answer_bytes);
        if let Some(ms) = self.idle_timeout_ms {
            limits.idle_timeout = (ms > 0).then(|| Duration::from_millis(ms));
        }
        if config.quota_backend_bytes == 0 {
            return Err(ConfigError::Invalid(
                "quota_backend_bytes must be at least 1".to_string(),
            ));
        }
        let limits = &config.limits;
        if limits.outbound_bytes == 0
            || limits.max_in_flight == 0
            || limits.inbound_bytes == 0
            || limits.max_connections == 0
            || limits.max_watches == 0
            || limits.answer_bytes == 0
        {
            return Err(ConfigError::Invalid(
                "outbound_bytes, max_in_flight, max_watches, inbound_bytes, max_connections and \
                 answer_bytes must be at least 1"
                    .to_string(),
            ));
        }
        if limits.stall_timeout.is_zero()
            || limits.watch_progress_interval.is_zero()
            || limits.frame_timeout.is_zero()
        {
            return Err(ConfigError::Invalid(
                "stall_timeout_ms, watch_progress_interval_ms and frame_timeout_ms must be at \
                 least 1"
                    .to_string(),
            ));
        }
        let numbers: Vec<&str> = config.etcd_version.split('.').collect();
        if numbers.len() != 3
            || numbers
                .iter()
                .any(|n| n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()))
        {
            return Err(ConfigError::Invalid(format!(
                "etcd_version must be major.minor.patch, such as 3.5.0 (not {:?})",
                config.etcd_version
            )));
        }
        // Slower, a core's streams (one 1 MiB chunk each in turn) would
        // leave each receiver waiting past its 10 s stall timeout, and no
        // snapshot would ever arrive.
        let rate = config.cluster.snapshot_send_rate;
        if rate != 0 && rate < MIN_SNAPSHOT_SEND_RATE {
            return Err(ConfigError::Invalid(
                "snapshot_send_mib_per_sec must be 0 (no limit) or at least 8".to_string(),
            ));
        }
        if !(4..=31).contains(&config.auth.bcrypt_cost) {
            return Err(ConfigError::Invalid(
                "bcrypt_cost must be between 4 and 31".to_string(),
            ));
        }
        crate::auth::jwt::JwtKeys::parse(&config.auth.token).map_err(ConfigError::Invalid)?;
        if config.auth.token_ttl.is_zero() {
            return Err(ConfigError::Invalid(
                "auth_token_ttl must be at least 1 second".to_string(),
            ));
        }
        if config.client_tls.files("")?.is_none() && config.metrics_tls {
            return Err(ConfigError::Invalid(
                "an https metrics URL needs --cert-file and --key-file".to_string(),
            ));
        }
        config.peer_tls.files("peer-")?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_etcd_version_is_major_minor_patch() {
        let with = |version: &str| {
            Overrides {
                etcd_version: Some(version.to_string()),
                ..Overrides::default()
            }
            .apply(ServerConfig::default())
        };
        assert_eq!(with("3.5.17").unwrap().etcd_version, "3.5.17");
        for refused in ["3.5", "3.5.x", "", "3..1", "v3.5.0", "3.5.0.1"] {
            assert!(with(refused).is_err(), "{refused:?}");
        }
        assert_eq!(ServerConfig::default().etcd_version, "3.6.0");
    }

    #[test]
    fn a_file_overrides_the_defaults_and_flags_override_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(
            &path,
            "name = \"n1\"\nclient_address = \"127.0.0.1:3000\"\nshards = 8\nstall_timeout_ms = 500\n",
        )
        .unwrap();
        let from_file = Overrides::from_file(&path)
            .unwrap()
            .apply(ServerConfig::default())
            .unwrap();
        assert_eq!(from_file.name, "n1");
        assert_eq!(from_file.client_address.port(), 3000);
        assert_eq!(from_file.shards, 8);
        assert_eq!(from_file.limits.stall_timeout, Duration::from_millis(500));
        assert_eq!(from_file.data_dir, PathBuf::from("keel-data"));
        let flags = Overrides {
            shards: Some(2),
            ..Overrides::default()
        };
        let both = flags.apply(from_file).unwrap();
        assert_eq!((both.shards, both.name.as_str()), (2, "n1"));
    }

    #[test]
    fn unknown_settings_and_zero_limits_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("keel.toml");
        std::fs::write(&path, "shard = 8\n").unwrap();
        let error = Overrides::from_file(&path).unwrap_err().to_string();
        assert!(error.contains("unknown field"), "{error}");
        let zero = Overrides {
            max_in_flight: Some(0),
            ..Overrides::default()
        };
        assert!(zero.apply(ServerConfig::default()).is_err());
    }

    #[test]
    fn the_snapshot_send_rate_is_none_or_at_least_8_mib_a_second() {
        let rate = |mib: u64| {
            Overrides {
                snapshot_send_mib_per_sec: Some(mib),
                ..Overrides::default()
            }
            .apply(ServerConfig::default())
            .map(|config| config.cluster.snapshot_send_rate)
        };
        assert_eq!(rate(0).unwrap(), 0);
        assert_eq!(rate(8).unwrap(), 8 << 20);
        assert!(rate(7).is_err());
        assert_eq!(
            ServerConfig::default().cluster.snapshot_send_rate,
            DEFAULT_SNAPSHOT_SEND_RATE
        );
    }
}
