//! The client: members, the shard map, leaders, and the calls.
//!
//! It is given one or more members' client addresses. On connect it asks
//! one for its status, which carries the shard map: S shards served by C
//! cores, shard `s` by core `s % C`, each core on its own port. A request
//! whose keys all live on one shard goes to that shard's core on the
//! member believed to lead the shard; anything else (a range over every
//! shard, leases by id 0, status) goes to a member's client port.
//!
//! Leaders are learned per shard from statuses, from refusals that name
//! the leader (`NotLeader`), and from writes that succeed. A refused
//! request follows the named leader; with no leader known it waits (25 ms,
//! doubling to 100 ms) and tries another member; an unreachable member is
//! passed over for a while. A write that was sent and not answered is
//! never sent again: it fails as [`Error::Indeterminate`] (`retry.rs`).
//! Everything runs within the call's deadline.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use keel_proto::routing::prefix_end;

/// The key and range end of every key starting with `prefix`. The empty
/// prefix is every key: `("\0", "\0")`, as etcd's `WithPrefix` makes it
/// (an empty key alone is refused).
pub fn prefix_range(prefix: &[u8]) -> (Vec<u8>, Vec<u8>) {
    if prefix.is_empty() {
        return (vec![0], vec![0]);
    }
    (prefix.to_vec(), prefix_end(prefix))
}
use keel_proto::routing::{home_of_lease, shard_of, shard_of_range};
use keel_proto::{
    AlarmAction, AlarmMember, DeleteRangeRequest, DeleteRangeResponse, LeaderAction, MemberAction,
    MemberInfo, PutRequest, PutResponse, RangeRequest, RangeResponse, Request, Response,
    ResponseBody, Revision, Status, TxnRequest, TxnResponse,
};

use crate::connection::Subscription;
use crate::error::{Error, Result};
use crate::member::Member;
use crate::retry::{self, Next};

/// How a [`Client`] connects ([`Client::connect_with`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientOptions {
    /// How long a connection may take to open (etcd's dial timeout).
    pub connect_timeout: Duration,
    /// Idle time before the kernel probes a connection, and the time
    /// between probes: a peer gone silent is found out in about
    /// `keepalive_time + 9 * keepalive_interval`.
    pub keepalive_time: Duration,
    /// See `keepalive_time`.
    pub keepalive_interval: Duration,
    /// How long a call (a request and its answer, with every retry on
    /// other members) may take before it fails with [`Error::Timeout`]
    /// (or, for a write that was sent, [`Error::Indeterminate`]); `None`
    /// waits as long as it takes. (A watch's stream and a lease
    /// keep-alive have their own rules.)
    pub request_timeout: Option<Duration>,
    /// After a core's port (or a member's client port) could not be
    /// reached, calls go elsewhere (the client port, other members) for
    /// this long before it is tried again (doubling, up to 64 times this,
    /// while it keeps failing).
    pub core_retry: Duration,
    /// TLS to every member (`crate::tls`); `None` speaks plain TCP.
    pub tls: Option<ClientTls>,
    /// The user to log in as when the cluster has auth on
    /// (docs/security.md); `None` calls as nobody.
    pub credentials: Option<crate::session::Credentials>,
}

/// A TLS configuration for [`ClientOptions::tls`] (built by
/// [`crate::tls::client_config`] with [`crate::tls::KEEL_ALPN`]).
#[derive(Debug, Clone)]
pub struct ClientTls(pub std::sync::Arc<rustls::ClientConfig>);

impl PartialEq for ClientTls {
    fn eq(&self, other: &ClientTls) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

impl Eq for ClientTls {}

impl ClientTls {
    /// TLS with the files given, offering keel's protocol.
    ///
    /// # Errors
    /// [`crate::tls::TlsError`] naming the file or setting at fault.
    pub fn from_files(
        files: &crate::tls::TlsFiles,
    ) -> std::result::Result<ClientTls, crate::tls::TlsError> {
        crate::tls::client_config(files, &[crate::tls::KEEL_ALPN]).map(ClientTls)
    }
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            connect_timeout: Duration::from_secs(2),
            keepalive_time: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(5),
            request_timeout: Some(Duration::from_secs(30)),
            core_retry: Duration::from_secs(1),
            tls: None,
            credentials: None,
        }
    }
}

struct Inner {
    /// The members given, in the order given.
    members: Vec<Member>,
    options: ClientOptions,
    /// Shards of the keyspace (the same on every member).
    shards: AtomicUsize,
    /// The member believed to lead each shard, by shard (an index into
    /// `members`).
    leaders: Mutex<Vec<Option<usize>>>,
    /// The member calls with no known leader go to first: the last one
    /// that answered.
    preferred: AtomicUsize,
    next_id: AtomicU64,
}

/// A handle on a keel cluster (or a single keel). Cheap to clone; clones
/// share connections.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// Where a request should go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Route {
    /// A member's client port.
    Any,
    /// The core that serves this shard.
    Shard(usize),
}

impl Client {
    /// Connects to the first member (`host:port` of its client port) that
    /// answers and learns the shard map from it. Give every member of a
    /// cluster: calls go to each shard's leader, and on to other members
    /// when one fails.
    ///
    /// # Errors
    /// [`Error::Connect`] when none answers.
    pub async fn connect<S: AsRef<str>>(endpoints: &[S]) -> Result<Client> {
        Client::connect_with(endpoints, ClientOptions::default()).await
    }

    /// [`Client::connect`] with `options`.
    ///
    /// # Errors
    /// [`Error::Connect`] when none answers.
    pub async fn connect_with<S: AsRef<str>>(
        endpoints: &[S],
        options: ClientOptions,
    ) -> Result<Client> {
        if endpoints.is_empty() {
            return Err(Error::InvalidRequest("no endpoints given".to_string()));
        }
        let session = Arc::new(crate::session::Session::new(options.credentials.clone()));
        let members = endpoints
            .iter()
            .map(|e| Member::new(e.as_ref().to_string(), options.clone(), session.clone()))
            .collect();
        let client = Client {
            inner: Arc::new(Inner {
                members,
                options,
                shards: AtomicUsize::new(1),
                leaders: Mutex::new(Vec::new()),
                preferred: AtomicUsize::new(0),
                next_id: AtomicU64::new(1),
            }),
        };
        // Only a member that answers counts: the call itself goes round
        // every member, without waiting for leaders.
        match client.status().await {
            Ok(_) => Ok(client),
            Err(Error::Connect { reason, .. }) => Err(Error::Connect {
                endpoints: endpoints
                    .iter()
                    .map(|e| e.as_ref())
                    .collect::<Vec<_>>()
                    .join(","),
                reason,
            }),
            Err(other) => Err(other),
        }
    }

    /// Asks a member for its status and routes by the shard map and the
    /// leaders in it.
    ///
    /// # Errors
    /// As any call.
    pub async fn refresh_shard_map(&self) -> Result<Status> {
        self.status().await
    }

    /// Member `at`'s own status, taken in.
    async fn status_of(&self, at: usize) -> Result<Status> {
        let member = self.member(at)?;
        let call = async {
            let connection = member.main_connection().await?;
            connection.call(self.next_id(), &Request::Status).await
        };
        let response = self.within_deadline(call).await?;
        match response.body {
            ResponseBody::Status(status) => {
                self.learn(at, &status);
                Ok(status)
            }
            ResponseBody::Error(body) => Err(body.into()),
            other => Err(unexpected("status", &other)),
        }
    }

    /// Takes in member `at`'s status: its id and cores, the shard count,
    /// and the leaders it names.
    fn learn(&self, at: usize, status: &Status) {
        let Some(member) = self.inner.members.get(at) else {
            return;
        };
        member.learn(status);
        let shards = (status.shards as usize).max(1);
        self.inner.shards.store(shards, Ordering::Relaxed);
        let named: Vec<(usize, Option<usize>)> = status
            .shard_info
            .iter()
            .filter(|info| info.leader != 0)
            .map(|info| (info.shard as usize, self.member_with_id(info.leader)))
            .collect();
        if let Ok(mut leaders) = self.inner.leaders.lock() {
            leaders.resize(shards, None);
            for (shard, leader) in named {
                if let (Some(slot), Some(leader)) = (leaders.get_mut(shard), leader) {
                    *slot = Some(leader);
                }
            }
        }
    }

    fn member(&self, at: usize) -> Result<&Member> {
        self.inner
            .members
            .get(at)
            .ok_or_else(|| Error::InvalidRequest(format!("no member {at}")))
    }

    /// The index of the member with `id`, among those whose status was read.
    fn member_with_id(&self, id: u64) -> Option<usize> {
        self.inner.members.iter().position(|m| m.id() == Some(id))
    }

    /// The index of the member with `id`, reading the statuses of members
    /// not known yet if need be.
    async fn find_member(&self, id: u64) -> Option<usize> {
        if let Some(at) = self.member_with_id(id) {
            return Some(at);
        }
        for at in 0..self.inner.members.len() {
            let unknown = self.inner.members.get(at).is_some_and(|m| !m.is_known());
            if unknown && self.status_of(at).await.is_ok() {
                if let Some(found) = self.member_with_id(id) {
                    return Some(found);
                }
            }
        }
        None
    }

    /// The number of members it was given.
    pub fn member_count(&self) -> usize {
        self.inner.members.len()
    }

    /// The number of shards of the keyspace.
    pub fn shard_count(&self) -> usize {
        self.inner.shards.load(Ordering::Relaxed)
    }

    /// The member id of the member this client believes leads `shard`, if
    /// it believes one does.
    pub fn leader_of(&self, shard: usize) -> Option<u64> {
        let at = self.inner.leaders.lock().ok()?.get(shard).copied()??;
        self.inner.members.get(at)?.id()
    }

    pub(crate) fn next_id(&self) -> u64 {
        self.inner.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// The member to try first for `route`: the shard's leader when one is
    /// known and reachable, else the preferred member, else the next one
    /// that is reachable (or the preferred one if none is).
    fn first_member(&self, route: Route) -> usize {
        if let Route::Shard(shard) = route {
            let leader = self
                .inner
                .leaders
                .lock()
                .ok()
                .and_then(|l| l.get(shard).copied().flatten());
            if let Some(at) = leader.filter(|at| self.reachable(*at)) {
                return at;
            }
        }
        let preferred = self.inner.preferred.load(Ordering::Relaxed);
        if self.reachable(preferred) {
            return preferred;
        }
        self.member_after(preferred)
    }

    /// The next member after `at` that is reachable and not silent, else
    /// the next one that is not silent (a connect is cheap to try; a call
    /// to a member that does not answer costs the whole deadline), else
    /// simply the next.
    fn member_after(&self, at: usize) -> usize {
        let count = self.inner.members.len().max(1);
        let next = |ok: &dyn Fn(usize) -> bool| {
            (1..count).map(|step| (at + step) % count).find(|n| ok(*n))
        };
        next(&|n| self.reachable(n))
            .or_else(|| next(&|n| !self.is_silent(n)))
            .unwrap_or((at + 1) % count)
    }

    /// Neither unreachable nor silent lately.
    fn reachable(&self, at: usize) -> bool {
        self.inner
            .members
            .get(at)
            .is_some_and(|m| !m.is_unreachable() && !m.is_silent())
    }

    fn is_silent(&self, at: usize) -> bool {
        self.inner.members.get(at).is_some_and(Member::is_silent)
    }

    /// Notes that member `at` answered `route`: it is preferred for calls
    /// with no known leader, and leads the shard when it took a write.
    fn answered(&self, route: Route, at: usize, wrote: bool) {
        self.inner.preferred.store(at, Ordering::Relaxed);
        if let (Route::Shard(shard), true) = (route, wrote) {
            self.set_leader(shard, at);
        }
    }

    /// Member `at` left a call unanswered (it may be paused, cut off or
    /// dead while its connection looks open): the next calls for `route`
    /// start elsewhere, and come back to it only if it is named leader
    /// again. Without this, every write to a shard whose leader was
    /// paused went to it again, and timed out again.
    fn suspect(&self, route: Route, at: usize) {
        if let Some(member) = self.inner.members.get(at) {
            member.went_silent();
        }
        if let Route::Shard(shard) = route {
            if let Ok(mut leaders) = self.inner.leaders.lock() {
                if let Some(slot) = leaders.get_mut(shard).filter(|l| **l == Some(at)) {
                    *slot = None;
                }
            }
        }
        if self.inner.preferred.load(Ordering::Relaxed) == at {
            self.inner
                .preferred
                .store(self.member_after(at), Ordering::Relaxed);
        }
    }

    fn set_leader(&self, shard: usize, at: usize) {
        if let Ok(mut leaders) = self.inner.leaders.lock() {
            if leaders.len() <= shard {
                leaders.resize(shard + 1, None);
            }
            if let Some(slot) = leaders.get_mut(shard) {
                *slot = Some(at);
            }
        }
    }

    /// `call` within the client's call deadline
    /// ([`ClientOptions::request_timeout`]).
    pub(crate) async fn within_deadline<T>(
        &self,
        call: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        match self.inner.options.request_timeout {
            Some(limit) => tokio::time::timeout(limit, call)
                .await
                .map_err(|_| Error::Timeout(limit))?,
            None => call.await,
        }
    }

    /// Sends `request` where `route` says, following leaders and trying
    /// other members as `retry.rs` decides, and returns its answer, turning
    /// an error response into [`Error::Server`]. A write that was sent and
    /// got no answer it could trust fails as [`Error::Indeterminate`].
    pub(crate) async fn call(&self, route: Route, request: Request) -> Result<Response> {
        let retry_safe = retry::is_retry_safe(&request);
        let one_shard = retry::is_one_shard_write(&request, matches!(route, Route::Shard(_)));
        // Set while a write is sent and not answered: if the deadline
        // passes then, its outcome is unknown.
        let unanswered = AtomicBool::new(false);
        // The member of the latest attempt.
        let tried = AtomicUsize::new(usize::MAX);
        let outcome = self
            .within_deadline(self.call_members(
                route,
                &request,
                (retry_safe, one_shard),
                &unanswered,
                &tried,
            ))
            .await;
        // Unanswered (not a member's refusal): that member is passed over.
        if let Err(Error::Timeout(_) | Error::Disconnected) = &outcome {
            self.suspect(route, tried.load(Ordering::Relaxed));
        }
        match outcome {
            // The deadline passed: unknown only if the write was out.
            Err(error @ Error::Timeout(_)) => {
                if unanswered.load(Ordering::Relaxed) {
                    Err(Error::Indeterminate(Box::new(error)))
                } else {
                    Err(error)
                }
            }
            Err(error) if !retry_safe && retry::leaves_outcome_unknown_for(&error, one_shard) => {
                Err(Error::Indeterminate(Box::new(error)))
            }
            other => other,
        }
    }

    async fn call_members(
        &self,
        route: Route,
        request: &Request,
        (retry_safe, one_shard): (bool, bool),
        unanswered: &AtomicBool,
        tried: &AtomicUsize,
    ) -> Result<Response> {
        // Never sent to another member than the first it went to.
        let bound = retry::is_bound_to_member(request);
        let mut at = self.first_member(route);
        let mut backoff = retry::FIRST_BACKOFF;
        // Attempts since the last wait: after two rounds of every member
        // (refusals naming each other), wait.
        let mut hops = 0usize;
        // Members in a row that could not be reached, or that are
        // learners: when every one is, the call fails at once rather than
        // at its deadline.
        let mut unreachable = 0usize;
        // A call refused for its token logs in again, once.
        let mut logged_in_again = false;
        let token_generation = AtomicU64::new(0);
        loop {
            let member = self.member(at)?;
            tried.store(at, Ordering::Relaxed);
            if !member.is_known() && matches!(route, Route::Shard(_)) {
                // Its cores' ports, so that the shard's own core answers.
                // A failure here shows again in the attempt.
                let _ = self.status_of(at).await;
            }
            let attempt = async {
                let connection = member.connection(route).await?;
                token_generation.store(connection.token_generation(), Ordering::Relaxed);
                unanswered.store(!retry_safe, Ordering::Relaxed);
                connection.call(self.next_id(), request).await
            };
            let answer = attempt.await;
            if answer.is_ok() {
                member.answered();
                unanswered.store(false, Ordering::Relaxed);
            }
            let error = match answer {
                Ok(response) => match response.body {
                    ResponseBody::Error(body) => Error::from(body),
                    _ => {
                        self.answered(route, at, !retry_safe);
                        return Ok(response);
                    }
                },
                Err(error) => error,
            };
            let stale_token = matches!(
                error,
                Error::Server {
                    code: keel_proto::ErrorCode::Unauthenticated,
                    ..
                }
            );
            if stale_token && !logged_in_again && member.has_user() {
                // Nothing was done: the server refused before running it.
                logged_in_again = true;
                member
                    .forget_token(token_generation.load(Ordering::Relaxed))
                    .await;
                continue;
            }
            hops += 1;
            let members = self.inner.members.len();
            unreachable = match error {
                Error::Connect { .. }
                | Error::Server {
                    code: keel_proto::ErrorCode::Learner,
                    ..
                } => unreachable + 1,
                _ => 0,
            };
            let next = retry::next(&error, retry_safe, one_shard);
            if next == Next::GiveUp || unreachable >= members || bound {
                return Err(error);
            }
            let wait = matches!(next, Next::OtherMember { wait: true }) || hops >= members * 2;
            if wait {
                tokio::time::sleep(backoff).await;
                backoff = retry::grow(backoff);
                hops = 0;
            }
            at = match next {
                Next::Follow(id) => match self.find_member(id).await {
                    // A leader named by a member that has not heard of the
                    // election yet, and that left calls unanswered: the
                    // next member is asked instead.
                    Some(leader) if self.is_silent(leader) => self.member_after(at),
                    Some(leader) => {
                        if let Route::Shard(shard) = route {
                            self.set_leader(shard, leader);
                        }
                        leader
                    }
                    // A leader this client was not given: any member
                    // serves reads; writes keep being refused until one
                    // of the given members leads.
                    None => self.member_after(at),
                },
                _ => self.member_after(at),
            };
        }
    }

    /// Opens a stream (a watch) under a fresh request id, on the first
    /// member that can be reached.
    pub(crate) async fn open_stream(&self, route: Route, request: Request) -> Result<Subscription> {
        let mut at = self.first_member(route);
        let mut last = None;
        for _ in 0..self.inner.members.len() {
            match self.member(at)?.connection(route).await {
                Ok(connection) => return connection.stream(self.next_id(), &request),
                Err(error) => last = Some(error),
            }
            at = self.member_after(at);
        }
        Err(last.unwrap_or(Error::Disconnected))
    }

    /// The shard holding all of `[key, range_end)`, if one does.
    pub(crate) fn route_range(&self, key: &[u8], range_end: &[u8]) -> Route {
        match shard_of_range(key, range_end, self.shard_count()) {
            Some(shard) => Route::Shard(shard),
            None => Route::Any,
        }
    }

    pub(crate) fn route_key(&self, key: &[u8]) -> Route {
        Route::Shard(shard_of(key, self.shard_count()))
    }

    pub(crate) fn route_lease(&self, id: i64) -> Route {
        if id == 0 {
            return Route::Any;
        }
        Route::Shard(home_of_lease(id, self.shard_count()))
    }

    /// The server's status (version, shard map, each shard's Raft state).
    ///
    /// # Errors
    /// As any call.
    pub async fn status(&self) -> Result<Status> {
        // The preferred member's, or the next one's that answers.
        let first = self.first_member(Route::Any);
        let count = self.inner.members.len();
        let mut last = Error::InvalidRequest("no endpoints given".to_string());
        for step in 0..count {
            let at = (first + step) % count;
            match self.status_of(at).await {
                Ok(status) => {
                    self.inner.preferred.store(at, Ordering::Relaxed);
                    return Ok(status);
                }
                Err(error) => last = error,
            }
        }
        Err(last)
    }

    /// The alarms raised (etcdctl's `alarm list`).
    ///
    /// # Errors
    /// As any call.
    pub async fn alarm_list(&self) -> Result<Vec<AlarmMember>> {
        self.alarm(AlarmAction::Get, AlarmMember::default()).await
    }

    /// Clears every alarm raised (etcdctl's `alarm disarm`); answers what
    /// it cleared. Clear a NOSPACE alarm once space is freed: if there is
    /// still none, the next write that takes space raises it again.
    ///
    /// # Errors
    /// As any call.
    pub async fn alarm_disarm(&self) -> Result<Vec<AlarmMember>> {
        let mut cleared = Vec::new();
        for member in self.alarm_list().await? {
            cleared.extend(self.alarm(AlarmAction::Deactivate, member).await?);
        }
        Ok(cleared)
    }

    /// Lists, raises or clears an alarm; answers the alarms it covered.
    ///
    /// # Errors
    /// As any call.
    pub async fn alarm(&self, action: AlarmAction, alarm: AlarmMember) -> Result<Vec<AlarmMember>> {
        let request = Request::Alarm {
            action,
            member_id: alarm.member_id,
            alarm: alarm.alarm,
        };
        let response = self.call(Route::Any, request).await?;
        match response.body {
            ResponseBody::Alarm(alarms) => Ok(alarms),
            other => Err(unexpected("alarm", &other)),
        }
    }

    /// Moves `shard`'s leadership to member `to` and keeps it there (the
    /// spread no longer moves it back); with [`keel_proto::ALL_SHARDS`],
    /// every shard the member that takes the request leads (etcdctl's
    /// `move-leader`: send it to that member alone). Answers whether
    /// leadership got there within the server's wait (it goes on trying).
    ///
    /// # Errors
    /// As any call; `BadRequest` for a member not in the cluster, or
    /// drained.
    pub async fn move_leader(&self, shard: u32, to: u64) -> Result<bool> {
        self.leader_request(LeaderAction::Move, shard, to).await
    }

    /// Lets `shard`'s leadership (every shard's, with
    /// [`keel_proto::ALL_SHARDS`]) follow the spread again.
    ///
    /// # Errors
    /// As any call.
    pub async fn unpin_leader(&self, shard: u32) -> Result<()> {
        self.leader_request(LeaderAction::Unpin, shard, 0)
            .await
            .map(|_| ())
    }

    /// Keeps every shard's leadership off `member` (before maintenance);
    /// answers whether no shard was led from it within the server's wait.
    ///
    /// # Errors
    /// As any call; `BadRequest` for a member not in the cluster.
    pub async fn drain(&self, member: u64) -> Result<bool> {
        self.leader_request(LeaderAction::Drain, 0, member).await
    }

    /// Lets a drained member lead again.
    ///
    /// # Errors
    /// As any call.
    pub async fn undrain(&self, member: u64) -> Result<()> {
        self.leader_request(LeaderAction::Undrain, 0, member)
            .await
            .map(|_| ())
    }

    /// The cluster's members, as the member that answers follows the list.
    ///
    /// # Errors
    /// As any call.
    pub async fn member_list(&self) -> Result<Vec<MemberInfo>> {
        self.member_list_with_cluster()
            .await
            .map(|(_, members)| members)
    }

    /// The cluster's id and its members, as [`Client::member_list`].
    ///
    /// # Errors
    /// As any call.
    pub async fn member_list_with_cluster(&self) -> Result<(u64, Vec<MemberInfo>)> {
        let request = Request::Member {
            action: MemberAction::List,
            member_id: 0,
            name: String::new(),
            peer_address: String::new(),
            learner: false,
        };
        let response = self.call(Route::Any, request).await?;
        match response.body {
            ResponseBody::Member {
                members,
                cluster_id,
                ..
            } => Ok((cluster_id, members)),
            other => Err(unexpected("member", &other)),
        }
    }

    /// Adds a member named `name` at `peer_address` (a learner unless
    /// `learner` is false); answers its new id and the members after it.
    /// Start it then with `--initial-cluster-state existing`.
    ///
    /// # Errors
    /// As any call; `BadRequest` with the reason for a change the cluster
    /// refuses (a name or address taken, too few members up, another
    /// change still under way).
    pub async fn member_add(
        &self,
        name: &str,
        peer_address: &str,
        learner: bool,
    ) -> Result<(u64, Vec<MemberInfo>)> {
        self.member_request(
            MemberAction::Add,
            0,
            name.to_string(),
            peer_address.to_string(),
            learner,
        )
        .await
    }

    /// Removes member `id` for good; answers the members after it.
    ///
    /// # Errors
    /// As [`Client::member_add`].
    pub async fn member_remove(&self, id: u64) -> Result<Vec<MemberInfo>> {
        self.member_request(
            MemberAction::Remove,
            id,
            String::new(),
            String::new(),
            false,
        )
        .await
        .map(|(_, members)| members)
    }

    /// Makes learner `id` a voter, once it has caught up; answers the
    /// members after it.
    ///
    /// # Errors
    /// As [`Client::member_add`]; `BadRequest` naming the shard for a
    /// learner not caught up yet.
    pub async fn member_promote(&self, id: u64) -> Result<Vec<MemberInfo>> {
        self.member_request(
            MemberAction::Promote,
            id,
            String::new(),
            String::new(),
            false,
        )
        .await
        .map(|(_, members)| members)
    }

    /// Changes member `id`'s peer address; answers the members after it.
    ///
    /// # Errors
    /// As [`Client::member_add`].
    pub async fn member_update(&self, id: u64, peer_address: &str) -> Result<Vec<MemberInfo>> {
        self.member_request(
            MemberAction::Update,
            id,
            String::new(),
            peer_address.to_string(),
            false,
        )
        .await
        .map(|(_, members)| members)
    }

    async fn member_request(
        &self,
        action: MemberAction,
        member_id: u64,
        name: String,
        peer_address: String,
        learner: bool,
    ) -> Result<(u64, Vec<MemberInfo>)> {
        let request = Request::Member {
            action,
            member_id,
            name,
            peer_address,
            learner,
        };
        let response = self.call(Route::Any, request).await?;
        match response.body {
            ResponseBody::Member {
                member_id, members, ..
            } => Ok((member_id, members)),
            other => Err(unexpected("member", &other)),
        }
    }

    async fn leader_request(
        &self,
        action: LeaderAction,
        shard: u32,
        member_id: u64,
    ) -> Result<bool> {
        let request = Request::Leader {
            action,
            shard,
            member_id,
        };
        let response = self.call(Route::Any, request).await?;
        match response.body {
            ResponseBody::Leader { settled } => Ok(settled),
            other => Err(unexpected("leader", &other)),
        }
    }

    /// Stores `value` under `key`; answers the revision of the write.
    ///
    /// # Errors
    /// As any call.
    pub async fn put(
        &self,
        key: impl Into<Vec<u8>>,
        value: impl Into<Vec<u8>>,
    ) -> Result<Revision> {
        let request = PutRequest {
            key: key.into(),
            value: value.into(),
            ..PutRequest::default()
        };
        self.put_with(request).await.map(|(revision, _)| revision)
    }

    /// A put with every option of etcd's (lease, prev_kv, ignore_value,
    /// ignore_lease).
    ///
    /// # Errors
    /// As any call.
    pub async fn put_with(&self, request: PutRequest) -> Result<(Revision, PutResponse)> {
        let route = self.route_key(&request.key);
        let response = self.call(route, Request::Put(request)).await?;
        match response.body {
            ResponseBody::Put(put) => Ok((response.revision, put)),
            other => Err(unexpected("put", &other)),
        }
    }

    /// The value of `key`, if it exists.
    ///
    /// # Errors
    /// As any call.
    pub async fn get(&self, key: impl Into<Vec<u8>>) -> Result<Option<keel_proto::KeyValue>> {
        let request = RangeRequest {
            key: key.into(),
            ..RangeRequest::default()
        };
        let (_, answer) = self.range(request).await?;
        Ok(answer.kvs.into_iter().next())
    }

    /// Every key that starts with `prefix`, in key order.
    ///
    /// # Errors
    /// As any call.
    pub async fn get_prefix(
        &self,
        prefix: impl Into<Vec<u8>>,
    ) -> Result<(Revision, RangeResponse)> {
        let (key, range_end) = prefix_range(&prefix.into());
        let request = RangeRequest {
            key,
            range_end,
            ..RangeRequest::default()
        };
        self.range(request).await
    }

    /// A range with every option of etcd's; answers the revision it read at.
    ///
    /// # Errors
    /// As any call.
    pub async fn range(&self, request: RangeRequest) -> Result<(Revision, RangeResponse)> {
        let route = if request.revision == 0 {
            self.route_range(&request.key, &request.range_end)
        } else {
            // A read at a past revision over one shard still needs the
            // node-wide revision check; any core does it.
            Route::Any
        };
        let response = self.call(route, Request::Range(request)).await?;
        match response.body {
            ResponseBody::Range(range) => Ok((response.revision, range)),
            other => Err(unexpected("range", &other)),
        }
    }

    /// Deletes `key`; answers how many keys went (0 or 1).
    ///
    /// # Errors
    /// As any call.
    pub async fn delete(&self, key: impl Into<Vec<u8>>) -> Result<u64> {
        let request = DeleteRangeRequest {
            key: key.into(),
            ..DeleteRangeRequest::default()
        };
        self.delete_range(request).await.map(|(_, d)| d.deleted)
    }

    /// A delete with every option of etcd's.
    ///
    /// # Errors
    /// As any call.
    pub async fn delete_range(
        &self,
        request: DeleteRangeRequest,
    ) -> Result<(Revision, DeleteRangeResponse)> {
        let route = self.route_range(&request.key, &request.range_end);
        let response = self.call(route, Request::DeleteRange(request)).await?;
        match response.body {
            ResponseBody::DeleteRange(delete) => Ok((response.revision, delete)),
            other => Err(unexpected("delete", &other)),
        }
    }

    /// Runs a transaction (see [`crate::Txn`] to build one). Its keys must
    /// share a shard: give them a common `{hash tag}`.
    ///
    /// # Errors
    /// As any call; `CrossShardTxn` when its keys span shards.
    pub async fn txn(&self, request: TxnRequest) -> Result<(Revision, TxnResponse)> {
        let route = match crate::txn::first_key(&request) {
            Some(key) => self.route_key(key),
            None => Route::Any,
        };
        let response = self.call(route, Request::Txn(request)).await?;
        match response.body {
            ResponseBody::Txn(txn) => Ok((response.revision, txn)),
            other => Err(unexpected("txn", &other)),
        }
    }

    /// Forgets history below `revision`.
    ///
    /// # Errors
    /// As any call; `Compacted` at or below an earlier compaction,
    /// `FutureRevision` above the current revision.
    pub async fn compact(&self, revision: Revision) -> Result<Revision> {
        let response = self.call(Route::Any, Request::Compact { revision }).await?;
        match response.body {
            ResponseBody::Compact => Ok(response.revision),
            other => Err(unexpected("compact", &other)),
        }
    }
}

pub(crate) fn unexpected(what: &str, body: &ResponseBody) -> Error {
    Error::Protocol(format!("unexpected answer to {what}: {body:?}"))
}
