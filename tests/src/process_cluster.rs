//! A cluster of `keel` processes on 127.0.0.1, for fault tests: each member
//! has its own data directory and ports, and a [`FaultProxy`] in front of
//! its peer ports (the address the others have for it), so that a test can
//! blackhole, delay, drop or reset any directed link, and SIGKILL, SIGSTOP
//! or restart any member.
//!
//! Writes follow not-leader hints, and a write with no answer is reported
//! as of unknown outcome, as a client must.

use std::collections::HashMap;
use std::io::BufRead;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keel_client::{Client, ClientOptions, Error as ClientError};

use crate::fault_proxy::FaultProxy;
use crate::KilledOnDrop;

/// How long one call may take before its outcome counts as unknown.
pub const CALL_TIMEOUT: Duration = Duration::from_millis(1500);

/// The `keel` binary to run: `TEST_KEEL_BIN`, or the one `cargo build`
/// makes for this test binary's profile.
///
/// # Panics
/// When it cannot be built.
pub fn keel_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TEST_KEEL_BIN") {
        return PathBuf::from(path);
    }
    built_binary("keel")
}

/// The `keelctl` binary: `TEST_KEELCTL_BIN`, or the one `cargo build`
/// makes for this test binary's profile.
///
/// # Panics
/// When it cannot be built.
pub fn keelctl_binary() -> PathBuf {
    if let Some(path) = std::env::var_os("TEST_KEELCTL_BIN") {
        return PathBuf::from(path);
    }
    built_binary("keelctl")
}

/// keel-net's binary `name`, built for this test binary's profile.
fn built_binary(name: &str) -> PathBuf {
    // target/<profile>/deps/<test binary>
    let exe = std::env::current_exe().expect("test binary");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target profile directory")
        .to_path_buf();
    let release = profile_dir.file_name().is_some_and(|p| p == "release");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_string());
    let mut build = Command::new(cargo);
    build.args(["build", "-q", "-p", "keel-net", "--bin", name]);
    if release {
        build.arg("--release");
    }
    let status = build.status().expect("run cargo build");
    assert!(
        status.success(),
        "cargo build -p keel-net --bin {name} failed"
    );
    profile_dir.join(name)
}

/// `n` consecutive free ports on 127.0.0.1, held as listeners (drop them
/// to free them).
fn port_block(n: usize) -> Vec<TcpListener> {
    use rand::Rng;
    let mut rng = rand::thread_rng();
    for _ in 0..1000 {
        // Below Linux's ephemeral range (32768 on): a port there may be taken
        // as the source of an outgoing connection while its member is down,
        // and the member could not bind it again.
        let base: u16 = rng.gen_range(10_000..32_000);
        let block: Result<Vec<TcpListener>, _> = (0..n as u16)
            .map(|i| TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if let Ok(block) = block {
            return block;
        }
    }
    panic!("no block of {n} free ports");
}

/// One member.
pub struct ProcessMember {
    /// Its name.
    pub name: String,
    /// Its member id.
    pub id: u64,
    /// Its client address.
    pub client_address: SocketAddr,
    core_port_base: u16,
    listen_peer: SocketAddr,
    /// The proxy in front of its peer ports.
    pub proxy: FaultProxy,
    data_dir: PathBuf,
    log: PathBuf,
    process: Mutex<Option<KilledOnDrop>>,
    paused: AtomicBool,
    /// For a member added to a running cluster: the `--initial-cluster`
    /// it starts with (`--initial-cluster-state existing`).
    joins: Option<String>,
    /// Removed from the cluster: no longer counted.
    removed: AtomicBool,
}

/// A membership change a test makes.
enum Change {
    Add {
        name: String,
        peer: String,
        learner: bool,
    },
    Promote(u64),
    Remove(u64),
}

/// A new member's ports, proxy and directory; not started.
fn new_member(root: &Path, i: usize, cores: usize, id: u64) -> ProcessMember {
    // client, core ports, real peer ports, proxy ports
    let mut block = port_block(1 + 3 * cores);
    let proxy_listeners = block.split_off(1 + 2 * cores);
    let port = |l: &TcpListener| l.local_addr().expect("port").port();
    let client_address = SocketAddr::from(([127, 0, 0, 1], port(&block[0])));
    let core_port_base = port(&block[1]);
    let listen_peer = SocketAddr::from(([127, 0, 0, 1], port(&block[1 + cores])));
    drop(block);
    let proxy = FaultProxy::start(proxy_listeners, listen_peer, i as u64);
    let name = format!("m{i}");
    ProcessMember {
        id,
        data_dir: root.join(&name),
        log: root.join(format!("{name}.log")),
        name,
        client_address,
        core_port_base,
        listen_peer,
        proxy,
        process: Mutex::new(None),
        paused: AtomicBool::new(false),
        joins: None,
        removed: AtomicBool::new(false),
    }
}

impl ProcessMember {
    /// Its process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.process
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|p| p.0.id())
    }
}

/// What a write came to.
#[derive(Debug, Clone, PartialEq)]
pub enum WriteOutcome {
    /// Acknowledged at this revision.
    Applied(u64),
    /// Refused: it did not take effect.
    Refused(String),
    /// No answer: it may or may not take effect.
    Unknown,
}

/// A cluster of keel processes.
pub struct ProcessCluster {
    keel: PathBuf,
    /// The members, by index.
    pub members: Vec<ProcessMember>,
    initial_cluster: String,
    shards: usize,
    cores: usize,
    /// Flags every member starts with besides the harness's own.
    extra_flags: Vec<String>,
    runtime: tokio::runtime::Runtime,
    clients: Mutex<HashMap<usize, Client>>,
    /// A client given every member: writes go through its leader routing.
    cluster_client: Mutex<Option<Client>>,
    _root: tempfile::TempDir,
}

impl ProcessCluster {
    /// Starts `size` members with `shards` shards over `cores` cores each,
    /// and waits until every shard has a leader.
    ///
    /// # Panics
    /// When a member does not start or no leader is elected in 20 s.
    pub fn start(size: usize, shards: usize, cores: usize) -> ProcessCluster {
        ProcessCluster::start_with(size, shards, cores, &[])
    }

    /// [`ProcessCluster::start`], every member also given `extra_flags`.
    ///
    /// # Panics
    /// As [`ProcessCluster::start`].
    pub fn start_with(
        size: usize,
        shards: usize,
        cores: usize,
        extra_flags: &[&str],
    ) -> ProcessCluster {
        let cluster = ProcessCluster::create(size, shards, cores, extra_flags);
        cluster.start_all();
        cluster
    }

    /// Starts every member, and waits until every shard has a leader.
    ///
    /// # Panics
    /// As [`ProcessCluster::start`].
    pub fn start_all(&self) {
        for i in 0..self.size() {
            self.start_member(i);
        }
        self.wait_for_leaders(Duration::from_secs(20));
    }

    /// A cluster's members, ports and directories, none started (a test
    /// may prepare their directories first, as `keel restore` does).
    pub fn create(
        size: usize,
        shards: usize,
        cores: usize,
        extra_flags: &[&str],
    ) -> ProcessCluster {
        let mut root = tempfile::tempdir().expect("temp dir");
        // Kept for a post-mortem (members' logs and data) when asked.
        if std::env::var_os("KEEL_KEEP_CLUSTER_DIR").is_some() {
            root.disable_cleanup(true);
            eprintln!("cluster directory kept: {}", root.path().display());
        }
        let keel = keel_binary();
        let members: Vec<ProcessMember> = (0..size)
            .map(|i| {
                let id = keel_engine::shard::member_id(&format!("m{i}"));
                new_member(root.path(), i, cores, id)
            })
            .collect();
        let initial_cluster = members
            .iter()
            .map(|m| format!("{}=127.0.0.1:{}", m.name, m.proxy.ports[0]))
            .collect::<Vec<_>>()
            .join(",");
        let runtime = crate::client_runtime();
        ProcessCluster {
            keel,
            members,
            initial_cluster,
            shards,
            cores,
            extra_flags: extra_flags.iter().map(|f| f.to_string()).collect(),
            runtime,
            clients: Mutex::default(),
            cluster_client: Mutex::default(),
            _root: root,
        }
    }

    /// The `--initial-cluster` every member starts with.
    pub fn initial_cluster(&self) -> &str {
        &self.initial_cluster
    }

    /// Runs `future` on the harness's runtime (for a test's own client
    /// calls).
    pub fn block_on<F: std::future::Future>(&self, future: F) -> F::Output {
        self.runtime.block_on(future)
    }

    /// The number of members.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// The shard count.
    pub fn shards(&self) -> usize {
        self.shards
    }

    /// Member ids, by index.
    pub fn ids(&self) -> Vec<u64> {
        self.members.iter().map(|m| m.id).collect()
    }

    /// Starts member `i` on its directory and waits until it listens.
    ///
    /// # Panics
    /// When it exits or says nothing in 30 s.
    pub fn start_member(&self, i: usize) {
        let member = &self.members[i];
        let advertise = SocketAddr::from(([127, 0, 0, 1], member.proxy.ports[0]));
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&member.log)
            .expect("member log");
        let mut process = KilledOnDrop::spawn(
            Command::new(&self.keel)
                .arg("--name")
                .arg(&member.name)
                .arg("--data-dir")
                .arg(&member.data_dir)
                .arg("--listen-client")
                .arg(member.client_address.to_string())
                .arg("--core-port-base")
                .arg(member.core_port_base.to_string())
                .arg("--listen-peer")
                .arg(member.listen_peer.to_string())
                .arg("--advertise-peer")
                .arg(advertise.to_string())
                .arg("--initial-cluster")
                .arg(member.joins.as_ref().unwrap_or(&self.initial_cluster))
                .arg("--initial-cluster-state")
                .arg(if member.joins.is_some() {
                    "existing"
                } else {
                    "new"
                })
                .arg("--shards")
                .arg(self.shards.to_string())
                .arg("--cores")
                .arg(self.cores.to_string())
                .arg("--no-pin")
                .args(&self.extra_flags)
                // Snapshots made and installed are told at info level.
                .env(
                    "KEEL_LOG",
                    std::env::var("KEEL_MEMBER_LOG")
                        .unwrap_or_else(|_| "warn,keel_engine::shard::replica=info".to_string()),
                )
                .stdout(Stdio::piped())
                .stderr(log),
        );
        let stdout = process.stdout();
        let (tx, rx) = flume::bounded(1);
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = std::io::BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(30)).unwrap_or_default();
        assert!(
            line.contains("listening"),
            "member {i} did not start: {line:?}; log: {}",
            std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
        );
        *self.members[i]
            .process
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = Some(process);
        self.members[i].paused.store(false, Ordering::Relaxed);
        self.forget_client(i);
    }

    /// Member `i`'s data directory.
    pub fn data_dir(&self, i: usize) -> &Path {
        &self.members[i].data_dir
    }

    /// Stops member `i` cleanly (SIGTERM: it syncs every shard's tree and
    /// exits) and waits up to 30 s for it to exit.
    ///
    /// # Panics
    /// When it is still running after 30 s.
    pub fn stop(&self, i: usize) {
        if let Some(mut process) = self.take_process(i) {
            // SAFETY: kill(2) on a child this harness spawned and reaps.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(process.0.id() as libc::pid_t, libc::SIGTERM);
            }
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while process.0.try_wait().ok().flatten().is_none() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "member {i} did not stop within 30 s of SIGTERM"
                );
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        self.forget_client(i);
    }

    /// The alarms member `i` lists, or `Err` when it did not answer.
    pub fn alarms(&self, i: usize) -> Result<Vec<keel_proto::AlarmMember>, String> {
        let client = self.client(i).ok_or("member down")?;
        self.runtime
            .block_on(client.alarm_list())
            .map_err(|e| e.to_string())
    }

    /// Member `i`'s process, taken from the harness (it is no longer
    /// running as far as the harness knows).
    fn take_process(&self, i: usize) -> Option<KilledOnDrop> {
        self.members[i]
            .process
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }

    /// SIGKILL member `i`.
    pub fn kill(&self, i: usize) {
        if let Some(mut process) = self.take_process(i) {
            process.kill();
        }
        self.forget_client(i);
    }

    /// SIGSTOP (`true`) or SIGCONT member `i`.
    pub fn pause(&self, i: usize, paused: bool) {
        if let Some(pid) = self.members[i].pid() {
            let signal = if paused { libc::SIGSTOP } else { libc::SIGCONT };
            // SAFETY: kill(2) on a child this harness spawned and reaps.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(pid as libc::pid_t, signal);
            }
            self.members[i].paused.store(paused, Ordering::Relaxed);
        }
    }

    /// Whether member `i` runs (and is not paused).
    pub fn is_up(&self, i: usize) -> bool {
        self.members[i].pid().is_some() && !self.members[i].paused.load(Ordering::Relaxed)
    }

    fn forget_client(&self, i: usize) {
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&i);
    }

    /// A client of member `i` (connected once, kept).
    fn client(&self, i: usize) -> Option<Client> {
        if let Some(client) = self
            .clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&i)
        {
            return Some(client.clone());
        }
        if !self.is_up(i) {
            return None;
        }
        let options = ClientOptions {
            connect_timeout: Duration::from_millis(300),
            request_timeout: Some(CALL_TIMEOUT),
            ..ClientOptions::default()
        };
        let endpoint = self.members[i].client_address.to_string();
        let client = self
            .runtime
            .block_on(Client::connect_with(&[endpoint], options))
            .ok()?;
        self.clients
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(i, client.clone());
        Some(client)
    }

    /// Member `i`'s view of each shard's leader (member ids; 0 for none).
    pub fn leaders_seen_by(&self, i: usize) -> Option<Vec<u64>> {
        let views = self.shard_views(i)?;
        Some(views.into_iter().map(|(leader, _, _)| leader).collect())
    }

    /// Member `i`'s view of each shard: `(leader, term, last index)`.
    pub fn shard_views(&self, i: usize) -> Option<Vec<(u64, u64, u64)>> {
        let infos = self.shard_infos(i)?;
        Some(
            infos
                .iter()
                .map(|s| (s.leader, s.raft_term, s.raft_index))
                .collect(),
        )
    }

    /// Member `i`'s applied index of each shard.
    pub fn applied_indexes(&self, i: usize) -> Option<Vec<u64>> {
        let infos = self.shard_infos(i)?;
        Some(infos.iter().map(|s| s.applied_index).collect())
    }

    /// Member `i`'s status of each shard, if it answers in time.
    pub fn shard_infos(&self, i: usize) -> Option<Vec<keel_proto::ShardInfo>> {
        let client = self.client(i)?;
        let status = self
            .runtime
            .block_on(async { tokio::time::timeout(CALL_TIMEOUT, client.status()).await })
            .ok()?
            .ok()?;
        Some(status.shard_info)
    }

    /// Each shard's leader (member index) as a majority of members sees
    /// it, for the shards that have one.
    pub fn leaders(&self) -> Vec<Option<usize>> {
        let counted = self.counted();
        let views: Vec<Vec<u64>> = counted
            .iter()
            .filter_map(|i| self.leaders_seen_by(*i))
            .collect();
        (0..self.shards)
            .map(|shard| {
                let named = views.iter().filter_map(|view| view.get(shard).copied());
                let leader = crate::majority_leader(named, counted.len())?;
                let index = self.members.iter().position(|m| m.id == leader)?;
                self.is_up(index).then_some(index)
            })
            .collect()
    }

    /// Waits until every shard has a leader a majority agrees on.
    ///
    /// # Panics
    /// After `within` without.
    pub fn wait_for_leaders(&self, within: Duration) -> Vec<usize> {
        let deadline = Instant::now() + within;
        loop {
            let leaders = self.leaders();
            if leaders.iter().all(Option::is_some) {
                return leaders.into_iter().flatten().collect();
            }
            assert!(
                Instant::now() < deadline,
                "no leader for every shard: {leaders:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The members not removed, by index.
    pub fn counted(&self) -> Vec<usize> {
        (0..self.size())
            .filter(|i| !self.members[*i].removed.load(Ordering::Relaxed))
            .collect()
    }

    /// Adds a member to the cluster (a learner unless `learner` is false)
    /// through a running member, and prepares it to start with
    /// `--initial-cluster-state existing`; answers its index. Start it
    /// with [`ProcessCluster::start_member`].
    ///
    /// # Errors
    /// The last refusal, after trying for 30 s while the previous change
    /// is still under way.
    pub fn add_member(&mut self, learner: bool) -> Result<usize, String> {
        let i = self.size();
        let mut member = new_member(self._root.path(), i, self.cores, 0);
        let peer = format!("127.0.0.1:{}", member.proxy.ports[0]);
        let name = member.name.clone();
        let (id, members) = self.member_change(&Change::Add {
            name,
            peer,
            learner,
        })?;
        member.id = id;
        member.joins = Some(
            members
                .iter()
                .map(|m| format!("{}={}", m.name, m.peer_address))
                .collect::<Vec<_>>()
                .join(","),
        );
        self.members.push(member);
        Ok(i)
    }

    /// Makes learner `i` a voter, trying again while it catches up or the
    /// previous change is under way (for up to 30 s).
    ///
    /// # Errors
    /// The last refusal.
    pub fn promote(&self, i: usize) -> Result<(), String> {
        self.member_change(&Change::Promote(self.members[i].id))
            .map(|_| ())
    }

    /// Removes member `i` (it keeps running until killed).
    ///
    /// # Errors
    /// As [`ProcessCluster::promote`].
    pub fn remove(&self, i: usize) -> Result<(), String> {
        self.member_change(&Change::Remove(self.members[i].id))?;
        self.members[i].removed.store(true, Ordering::Relaxed);
        Ok(())
    }

    /// Runs a membership change through the cluster client, again while
    /// the cluster says to try again, for up to 30 s.
    fn member_change(&self, change: &Change) -> Result<(u64, Vec<keel_proto::MemberInfo>), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            // A client of its own, with a long deadline: the load's client
            // passes over members that were slow, dropping what they had
            // in flight.
            let endpoints: Vec<String> = self
                .counted()
                .into_iter()
                .filter(|i| self.is_up(*i))
                .map(|i| self.members[i].client_address.to_string())
                .collect();
            let options = ClientOptions {
                connect_timeout: Duration::from_millis(300),
                request_timeout: Some(Duration::from_secs(20)),
                ..ClientOptions::default()
            };
            let outcome = self.runtime.block_on(async {
                let client = Client::connect_with(&endpoints, options).await?;
                let made = match change {
                    Change::Add {
                        name,
                        peer,
                        learner,
                    } => client.member_add(name, peer, *learner).await,
                    Change::Promote(id) => client.member_promote(*id).await.map(|m| (*id, m)),
                    Change::Remove(id) => client.member_remove(*id).await.map(|m| (*id, m)),
                };
                match made {
                    // Made or not: the list tells.
                    Err(error) if error.is_indeterminate() => {
                        let members = client.member_list().await?;
                        let id = match change {
                            Change::Add { name, .. } => {
                                members.iter().find(|m| m.name == *name).map(|m| m.id)
                            }
                            Change::Promote(id) => members
                                .iter()
                                .find(|m| m.id == *id && !m.learner)
                                .map(|m| m.id),
                            Change::Remove(id) => {
                                (!members.iter().any(|m| m.id == *id)).then_some(*id)
                            }
                        };
                        id.map(|id| (id, members)).ok_or(error)
                    }
                    made => made,
                }
            });
            match outcome.map_err(|e| e.to_string()) {
                Ok(done) => return Ok(done),
                Err(why)
                    if Instant::now() < deadline
                        && (why.contains("still changing")
                            || why.contains("try again")
                            || why.contains("not caught up")
                            || why.contains("leader")
                            || why.contains("may or may not")
                            || why.contains("connect")
                            || why.contains("timed out")) =>
                {
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(why) => return Err(why),
            }
        }
    }

    /// Waits until each of `members` has every shard's Raft configuration
    /// at the member list it follows, none joint.
    ///
    /// # Panics
    /// After `within` without.
    pub fn wait_until_settled(&self, members: &[usize], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let mut unsettled = Vec::new();
            for &i in members {
                let Some(client) = self.client(i) else {
                    unsettled.push(format!("m{i}: down"));
                    continue;
                };
                let asked = self.runtime.block_on(async {
                    tokio::time::timeout(CALL_TIMEOUT, async {
                        let list = client.member_list().await?;
                        let status = client.status().await?;
                        Ok::<_, keel_client::Error>((list, status))
                    })
                    .await
                });
                let Ok(Ok((list, status))) = asked else {
                    unsettled.push(format!("m{i}: no answer"));
                    continue;
                };
                let ids = |learner: bool| {
                    let mut ids: Vec<u64> = list
                        .iter()
                        .filter(|m| m.learner == learner)
                        .map(|m| m.id)
                        .collect();
                    ids.sort_unstable();
                    ids
                };
                let (voters, learners) = (ids(false), ids(true));
                for shard in &status.shard_info {
                    let (mut v, mut l) = (shard.voters.clone(), shard.learners.clone());
                    v.sort_unstable();
                    l.sort_unstable();
                    if v != voters || l != learners || !shard.voters_outgoing.is_empty() {
                        unsettled.push(format!(
                            "m{i} shard {}: voters {v:x?} learners {l:x?} leaving {:x?}",
                            shard.shard, shard.voters_outgoing
                        ));
                    }
                }
            }
            if unsettled.is_empty() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "not settled after {within:?}: {unsettled:#?}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The member leading the most shards, and how many.
    pub fn busiest_leader(&self) -> Option<(usize, usize)> {
        let mut counts = vec![0usize; self.size()];
        for leader in self.leaders().into_iter().flatten() {
            counts[leader] += 1;
        }
        counts
            .into_iter()
            .enumerate()
            .max_by_key(|(_, n)| *n)
            .filter(|(_, n)| *n > 0)
    }

    /// A key of `shard` (by its hash tag).
    pub fn key_of_shard(&self, shard: usize, name: &str) -> String {
        (0u64..)
            .map(|n| format!("{{{shard}-{n}}}{name}"))
            .find(|key| keel_proto::routing::shard_of(key.as_bytes(), self.shards) == shard)
            .unwrap_or_default()
    }

    /// Puts `key = value` through a client given every member (it finds
    /// the shard's leader, follows refusals and passes over dead members
    /// within its call deadline, [`CALL_TIMEOUT`]).
    pub fn put(&self, key: &str, value: &str) -> WriteOutcome {
        let Some(client) = self.cluster_client() else {
            return WriteOutcome::Refused("no member answered".to_string());
        };
        let put = self
            .runtime
            .block_on(client.put(key.as_bytes().to_vec(), value.as_bytes().to_vec()));
        match put {
            Ok(revision) => WriteOutcome::Applied(revision),
            // Sent and not answered: it may take effect.
            Err(error) if error.is_indeterminate() => WriteOutcome::Unknown,
            Err(error) => WriteOutcome::Refused(error.to_string()),
        }
    }

    /// Puts `key = value` until it is applied, for up to 20 s (a write just
    /// after start may meet a leadership hand-over); answers its revision.
    /// A write whose outcome was unknown may have applied twice.
    ///
    /// # Panics
    /// When no attempt applied in 20 s.
    pub fn put_applied(&self, key: &str, value: &str) -> u64 {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            match self.put(key, value) {
                WriteOutcome::Applied(revision) => return revision,
                other => assert!(
                    std::time::Instant::now() < deadline,
                    "put {key}: {other:?} for 20 s"
                ),
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Every member's client address, by member index.
    pub fn endpoints(&self) -> Vec<String> {
        self.members
            .iter()
            .map(|m| m.client_address.to_string())
            .collect()
    }

    /// The client given every member (connected once, kept).
    pub fn cluster_client(&self) -> Option<Client> {
        let mut slot = self
            .cluster_client
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(client) = slot.as_ref() {
            return Some(client.clone());
        }
        let options = ClientOptions {
            connect_timeout: Duration::from_millis(300),
            request_timeout: Some(CALL_TIMEOUT),
            ..ClientOptions::default()
        };
        let endpoints = self.endpoints();
        let client = self
            .runtime
            .block_on(Client::connect_with(&endpoints, options))
            .ok()?;
        *slot = Some(client.clone());
        Some(client)
    }

    /// Reads `key` linearizably on member `i`: its value and modification
    /// revision, or `Err` when the read failed (a failed read tells
    /// nothing).
    pub fn get(&self, i: usize, key: &str) -> Result<Option<(String, u64)>, String> {
        let client = self.client(i).ok_or("member down")?;
        match self.runtime.block_on(client.get(key.as_bytes().to_vec())) {
            Ok(found) => Ok(found.map(|kv| {
                (
                    String::from_utf8_lossy(&kv.value).into_owned(),
                    kv.mod_revision,
                )
            })),
            Err(error) => {
                if matches!(error, ClientError::Timeout(_) | ClientError::Disconnected) {
                    self.forget_client(i);
                }
                Err(error.to_string())
            }
        }
    }

    /// Member `i`'s log so far.
    pub fn log(&self, i: usize) -> String {
        std::fs::read_to_string(&self.members[i].log).unwrap_or_default()
    }
}
