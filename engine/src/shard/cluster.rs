//! Who is in the cluster: its id and its members (docs/cluster.md,
//! "Identity"). Every member derives the same ids from the same
//! `--initial-cluster` and token, as etcd does, so a cluster starts
//! without any member telling another its id. Members added later get a
//! fresh random id (docs/membership.md); the list then lives in shard 0
//! and every member follows it.
//!
//! Invariants: member ids are nonzero and distinct, names are distinct,
//! and no removed id is a member. Each member holds one replica of every
//! shard, and its Raft id in every shard's group is its member id.

/// One member of the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its id: the Raft id of its replicas.
    pub id: u64,
    /// Its name (`--name`).
    pub name: String,
    /// Where its core 0 takes peer connections (`host:port`); core `c`
    /// listens on the port plus `c`.
    pub peer_address: String,
    /// A learner: gets every shard's log, votes in none and leads none.
    pub learner: bool,
}

/// The cluster a node belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cluster {
    /// Its id, from the token and the members: frames naming another are
    /// refused.
    pub id: u64,
    /// This node's member id.
    pub me: u64,
    /// Every member, this node included (unless it was removed), ordered
    /// by id.
    pub members: Vec<Member>,
    /// Every id ever removed, never given again: frames from them are
    /// refused.
    pub removed: Vec<u64>,
    /// The revision of the shard 0 entry that set this list (0: the list
    /// the cluster was created with).
    pub revision: u64,
}

/// The token a cluster is created with when none is given (etcd's
/// default `--initial-cluster-token` is `etcd-cluster`).
pub const DEFAULT_TOKEN: &str = "keel-cluster";

/// The name of a member started without `--name`.
pub const DEFAULT_NAME: &str = "default";

/// FNV-1a over the parts, each followed by a zero byte so that
/// `("ab", "c")` and `("a", "bc")` differ.
fn fnv1a<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &byte in part.iter().chain(std::iter::once(&0u8)) {
            hash = (hash ^ u64::from(byte)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// A member's id: from its name alone, so that a member keeps its id
/// whatever address it moves to. Never 0 (Raft's "none").
pub fn member_id(name: &str) -> u64 {
    fnv1a([name.as_bytes()]).max(1)
}

/// A cluster's id: from its token and its members (ordered by id).
fn cluster_id(token: &str, members: &[Member]) -> u64 {
    let mut parts: Vec<&[u8]> = vec![token.as_bytes()];
    for member in members {
        parts.push(member.name.as_bytes());
        parts.push(member.peer_address.as_bytes());
    }
    fnv1a(parts).max(1)
}

impl Cluster {
    /// A cluster of this one member (no `--initial-cluster`): what `keel`
    /// runs with no flags.
    pub fn single(name: &str) -> Cluster {
        let members = vec![Member {
            id: member_id(name),
            name: name.to_string(),
            peer_address: String::new(),
            learner: false,
        }];
        Cluster {
            id: cluster_id(DEFAULT_TOKEN, &members),
            me: member_id(name),
            members,
            removed: Vec::new(),
            revision: 0,
        }
    }

    /// The cluster `--initial-cluster name=address,...` describes, as
    /// member `name`, created with `token`.
    ///
    /// # Errors
    /// A message naming the problem: no members, a repeated or empty
    /// name, two names with one id, or `name` not among them.
    pub fn bootstrap(
        name: &str,
        initial: &[(String, String)],
        token: &str,
    ) -> Result<Cluster, String> {
        if initial.is_empty() {
            return Err("the initial cluster has no members".to_string());
        }
        let mut members: Vec<Member> = Vec::with_capacity(initial.len());
        for (member_name, address) in initial {
            if member_name.is_empty() {
                return Err("a member of the initial cluster has no name".to_string());
            }
            let id = member_id(member_name);
            if let Some(other) = members
                .iter()
                .find(|m| m.name == *member_name || m.id == id)
            {
                return Err(format!(
                    "members {:?} and {member_name:?} of the initial cluster have one id: \
                     give every member its own name",
                    other.name
                ));
            }
            members.push(Member {
                id,
                name: member_name.clone(),
                peer_address: address.clone(),
                learner: false,
            });
        }
        members.sort_by_key(|m| m.id);
        let me = members
            .iter()
            .find(|m| m.name == name)
            .map(|m| m.id)
            .ok_or_else(|| format!("this member's name {name:?} is not in the initial cluster"))?;
        Ok(Cluster {
            id: cluster_id(token, &members),
            me,
            members,
            removed: Vec::new(),
            revision: 0,
        })
    }

    /// Parses etcd's `--initial-cluster` form, `name=host:port,...`
    /// (a scheme such as `http://` before the address is dropped).
    ///
    /// # Errors
    /// A part without `=`.
    pub fn parse_initial(text: &str) -> Result<Vec<(String, String)>, String> {
        text.split(',')
            .filter(|part| !part.trim().is_empty())
            .map(|part| {
                let (name, address) = part.trim().split_once('=').ok_or_else(|| {
                    format!("{part:?} in the initial cluster is not name=host:port")
                })?;
                let address = address
                    .split_once("://")
                    .map_or(address, |(_, rest)| rest)
                    .trim_end_matches('/');
                Ok((name.trim().to_string(), address.to_string()))
            })
            .collect()
    }

    /// The Raft ids of the voters: every shard's group starts with these
    /// (the list it was created with), and is brought to these when the
    /// list changes.
    pub fn voters(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| !m.learner)
            .map(|m| m.id)
            .collect()
    }

    /// The Raft ids of the learners.
    pub fn learners(&self) -> Vec<u64> {
        self.members
            .iter()
            .filter(|m| m.learner)
            .map(|m| m.id)
            .collect()
    }

    /// Whether this node is the only member.
    pub fn is_single(&self) -> bool {
        self.members.len() == 1
    }

    /// Whether this node is a learner.
    pub fn me_is_learner(&self) -> bool {
        self.member(self.me).is_some_and(|m| m.learner)
    }

    /// Whether `id` was removed from the cluster.
    pub fn was_removed(&self, id: u64) -> bool {
        self.removed.contains(&id)
    }

    /// The member with id `id`.
    pub fn member(&self, id: u64) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// The other members.
    pub fn peers(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |m| m.id != self.me)
    }

    /// The member that should lead `shard` while it is up and caught up
    /// (docs/cluster.md, "Leadership spread"): shard `s` is the `s / cores`th
    /// shard of core `s % cores`, and the members take a core's shards in
    /// turn, each core starting one member further on. So every member
    /// leads about `shards / members` shards, spread over its cores, and
    /// every member computes the same answer (members are sorted by id).
    pub fn preferred_leader(&self, shard: usize, cores: usize) -> Option<u64> {
        self.preferred_leader_among(shard, cores, |_| true)
    }

    /// As [`Cluster::preferred_leader`], the turn going round only the
    /// members `eligible` keeps (those not drained); `None` if none is.
    pub fn preferred_leader_among(
        &self,
        shard: usize,
        cores: usize,
        eligible: impl Fn(u64) -> bool,
    ) -> Option<u64> {
        let cores = cores.max(1);
        let turn = shard / cores + shard % cores;
        let members: Vec<u64> = self
            .members
            .iter()
            .filter(|m| !m.learner)
            .map(|m| m.id)
            .filter(|id| eligible(*id))
            .collect();
        members.get(turn % members.len().max(1)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn three() -> Vec<(String, String)> {
        Cluster::parse_initial("a=127.0.0.1:2380,b=http://127.0.0.1:2480,c=127.0.0.1:2580/")
            .unwrap()
    }

    #[test]
    fn preferred_leaders_spread_over_members_and_their_cores() {
        let cluster = Cluster::bootstrap("a", &three(), "t").unwrap();
        for (shards, cores) in [(4, 2), (6, 2), (8, 2), (12, 4), (3, 1)] {
            // Shards led, by member and core.
            let mut led = std::collections::HashMap::<(u64, usize), usize>::new();
            let mut per_member = std::collections::HashMap::<u64, usize>::new();
            for shard in 0..shards {
                let id = cluster.preferred_leader(shard, cores).unwrap();
                *led.entry((id, shard % cores)).or_default() += 1;
                *per_member.entry(id).or_default() += 1;
            }
            let fair = shards.div_ceil(3);
            assert!(
                per_member.values().all(|n| *n <= fair) && per_member.len() == 3.min(shards),
                "{shards} shards on {cores} cores: {per_member:?}"
            );
            // No member leads two shards of one core while it leads none
            // of another.
            for member in per_member.keys() {
                let counts: Vec<usize> = (0..cores)
                    .map(|c| led.get(&(*member, c)).copied().unwrap_or(0))
                    .collect();
                let (least, most) = (counts.iter().min(), counts.iter().max());
                assert!(
                    most.unwrap() - least.unwrap() <= 1,
                    "{shards} shards on {cores} cores: member {member:x} leads {counts:?}"
                );
            }
        }
    }

    #[test]
    fn every_member_derives_the_same_ids() {
        let a = Cluster::bootstrap("a", &three(), "t").unwrap();
        let b = Cluster::bootstrap("b", &three(), "t").unwrap();
        assert_eq!(a.id, b.id);
        assert_eq!(a.members, b.members);
        assert_ne!(a.me, b.me);
        assert_eq!(a.member(b.me).unwrap().peer_address, "127.0.0.1:2480");
        assert_eq!(a.peers().count(), 2);
        // Another token or another address is another cluster.
        assert_ne!(Cluster::bootstrap("a", &three(), "u").unwrap().id, a.id);
        let mut moved = three();
        moved[2].1 = "127.0.0.1:2680".to_string();
        assert_ne!(Cluster::bootstrap("a", &moved, "t").unwrap().id, a.id);
    }

    #[test]
    fn a_bad_initial_cluster_is_refused_with_a_reason() {
        let err = Cluster::bootstrap("d", &three(), "t").unwrap_err();
        assert!(err.contains("not in the initial cluster"), "{err}");
        let mut twice = three();
        twice[1].0 = "a".to_string();
        let err = Cluster::bootstrap("a", &twice, "t").unwrap_err();
        assert!(err.contains("one id"), "{err}");
        assert!(Cluster::parse_initial("a=x,b").is_err());
        assert!(Cluster::bootstrap("a", &[], "t").is_err());
    }

    #[test]
    fn a_single_member_keeps_the_id_its_name_gave_it() {
        let single = Cluster::single(DEFAULT_NAME);
        assert!(single.is_single());
        assert_eq!(single.me, member_id(DEFAULT_NAME));
        assert_eq!(single.voters(), vec![single.me]);
    }
}
