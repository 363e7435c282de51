//! Corruption checks (docs/corruption.md): each member hashes its copy of
//! a shard at one revision, and the copies are compared. A member whose
//! hash differs from the others' gets a CORRUPT alarm on the shard, which
//! then refuses writes (`mvcc::KvError::Corrupt`) until it is cleared.
//!
//! The hash of a shard at revision R is CRC-32 over its pairs at R in key
//! order: each pair's key length, key, create and mod revisions, version,
//! lease, value length and value. Members that applied the same log have
//! the same pairs at R, so the same hash, whatever their tree files look
//! like (free pages, page layout, history kept). The pairs are read page
//! by page, [`PAGE_KEYS`] at a time, each page a read at R that waits, on
//! a member behind, until R is applied there (`remote::ReadPart`).

use std::cell::RefCell;
use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::rc::Rc;
use std::time::{Duration, Instant};

use crate::mvcc::{AlarmAction, AlarmKind, Entry, KeyValue, RangeRequest, RangeResponse, Revision};
use crate::shard::error::{NodeError, NodeResult};
use crate::shard::node::NodeClient;
use crate::shard::remote::{ask_number_within, ReadPart};
use crate::shard::remote_codec::{self, Request};
use crate::shard::replica::{Reply, ShardCall};
use crate::shard::router::CoreRouter;
use crate::shard::transport::{CallPart, Transport};

/// Pairs in one page of a hash.
pub(crate) const PAGE_KEYS: u64 = 256;
/// Bytes a page's pairs may take (a pair is at most 1.5 MiB).
const PAGE_BYTES: usize = 8 << 20;
/// How long a member asked for its hash may take to answer in all (it
/// reads its whole copy of the shard, about a second per 100 MB here).
pub(crate) const HASH_ANSWER_WAIT: Duration = Duration::from_secs(120);
/// How long one ask waits before the asker asks again. The member goes on
/// hashing meanwhile and answers the next ask from what it found; asking
/// again is also when a leader notices that the member went away (it asks
/// only members it heard from within an election timeout).
pub(crate) const HASH_ASK_WAIT: Duration = Duration::from_secs(3);
/// Finished hashes a member keeps for members that ask again.
const KEPT_HASHES: usize = 4;
/// Hashes of one shard a member computes at once for other members; more
/// are refused (the asker reports that member as not answering).
const MAX_RUNNING_HASHES: usize = 2;

/// Adds one pair to a shard's hash.
pub fn hash_pair(crc: &mut crc32fast::Hasher, pair: &KeyValue) {
    crc.update(&(pair.key.len() as u32).to_le_bytes());
    crc.update(&pair.key);
    crc.update(&pair.create_revision.to_le_bytes());
    crc.update(&pair.mod_revision.to_le_bytes());
    crc.update(&pair.version.to_le_bytes());
    crc.update(&pair.lease.to_le_bytes());
    crc.update(&(pair.value.len() as u32).to_le_bytes());
    crc.update(&pair.value);
}

/// The hash of one shard's pairs at `revision`, read page by page with
/// `read` (a read of the shard at the revision).
pub(crate) async fn hash_pages<F, Fut>(mut read: F, revision: Revision) -> NodeResult<u32>
where
    F: FnMut(RangeRequest) -> Fut,
    Fut: Future<Output = NodeResult<RangeResponse>>,
{
    let mut crc = crc32fast::Hasher::new();
    let mut from = vec![0];
    loop {
        let request = RangeRequest {
            key: from,
            range_end: vec![0],
            limit: PAGE_KEYS,
            revision,
            answer_limit: PAGE_BYTES,
            ..RangeRequest::default()
        };
        let page = read(request).await?;
        for pair in &page.kvs {
            hash_pair(&mut crc, pair);
        }
        match (page.more, page.kvs.last()) {
            (true, Some(last)) => from = [last.key.as_slice(), &[0]].concat(),
            _ => return Ok(crc.finalize()),
        }
    }
}

/// A read of `shard` at `revision` for a hash page, as a call.
pub(crate) fn page_call(
    shard: usize,
    request: RangeRequest,
    revision: Revision,
) -> impl FnOnce(crate::shard::replica::Reply<RangeResponse>) -> ShardCall {
    move |reply| ShardCall::RangeAt(Box::new(ReadPart::new(shard, request, revision, reply)))
}

/// A member's hashes of its shard asked for by other members: the one
/// under way, with the calls waiting for it, and the last few finished
/// (as the answer's bytes), for members that ask again.
#[derive(Default)]
pub(crate) struct HashJobs {
    /// Hashes under way, by revision, with the calls waiting for each.
    running: BTreeMap<Revision, Vec<(u64, u64)>>,
    /// The last [`KEPT_HASHES`] finished, first finished first: the
    /// revision and the answer's bytes.
    done: VecDeque<(Revision, Vec<u8>)>,
}

/// Answers member `from`'s call `id` with this member's hash of `shard` at
/// `revision`: at once if it was found already, else once the hash under
/// way (started now if none is) ends.
pub(crate) fn answer_hash(
    jobs: &Rc<RefCell<HashJobs>>,
    router: Rc<CoreRouter>,
    transport: Rc<dyn Transport>,
    shard: usize,
    (from, id): (u64, u64),
    revision: Revision,
) {
    {
        let mut state = jobs.borrow_mut();
        if let Some((_, answer)) = state.done.iter().find(|(r, _)| *r == revision) {
            let _ = transport.send_call(from, shard, CallPart::Answer, id, answer.clone());
            return;
        }
        if let Some(waiting) = state.running.get_mut(&revision) {
            waiting.push((from, id));
            return;
        }
        let running = state.running.len();
        if running >= MAX_RUNNING_HASHES {
            let busy = NodeError::InvalidRequest(format!(
                "{running} hashes of shard {shard} are under way here; ask again later"
            ));
            let answer = remote_codec::encode_index_answer(&Err(busy));
            let _ = transport.send_call(from, shard, CallPart::Answer, id, answer);
            return;
        }
        state.running.insert(revision, vec![(from, id)]);
    }
    let jobs = jobs.clone();
    glommio::spawn_local(async move {
        let hash = hash_pages(
            |request| router.call(shard, page_call(shard, request, revision)),
            revision,
        )
        .await;
        let answer = remote_codec::encode_index_answer(&hash.map(u64::from));
        let waiting = {
            let mut state = jobs.borrow_mut();
            // A hash under way is never dropped (its askers wait for it);
            // finished ones beyond the few kept go, first finished first.
            state.done.push_back((revision, answer.clone()));
            if state.done.len() > KEPT_HASHES {
                state.done.pop_front();
            }
            state.running.remove(&revision).unwrap_or_default()
        };
        for (from, id) in waiting {
            let _ = transport.send_call(from, shard, CallPart::Answer, id, answer.clone());
        }
    })
    .detach();
}

/// Asks member `member` for its hash of `shard` at `revision`, waiting
/// [`HASH_ASK_WAIT`]; hands `reply` the hash, or `None` when none came in
/// time (ask again).
pub(crate) fn ask_hash(
    router: Rc<CoreRouter>,
    transport: Rc<dyn Transport>,
    member: u64,
    shard: usize,
    revision: Revision,
    reply: Reply<Option<u32>>,
) {
    glommio::spawn_local(async move {
        let request = Request::Hash(revision);
        let asked = Instant::now();
        let answer =
            ask_number_within(&router, &*transport, member, shard, &request, HASH_ASK_WAIT).await;
        let answer = match answer {
            Some(Ok(hash)) => u32::try_from(hash).map(Some).map_err(|_| {
                NodeError::InvalidRequest(format!("member {member:x} answered a hash of {hash}"))
            }),
            Some(Err(error)) => Err(error),
            None => {
                // Not sent (no link, a full queue): the next ask waits the
                // rest of this one's turn, so asking again does not spin.
                let left = HASH_ASK_WAIT.saturating_sub(asked.elapsed());
                glommio::timer::sleep(left).await;
                Ok(None)
            }
        };
        let _ = reply.send(answer);
    })
    .detach();
}

/// What a check of one shard found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardCheck {
    /// The shard.
    pub shard: usize,
    /// The revision every member hashed at.
    pub revision: Revision,
    /// Each member's hash, or why it gave none (unreachable, say).
    pub hashes: Vec<(u64, Result<u32, String>)>,
    /// The members whose hash differs from most members' (empty when
    /// they agree, or when fewer than two answered).
    pub differing: Vec<u64>,
}

/// The members whose hash is not the one most members have; a tie goes to
/// `mine` (this member's hash). Fewer than two answers say nothing.
pub(crate) fn differing(hashes: &[(u64, Result<u32, String>)], mine: Option<u32>) -> Vec<u64> {
    let answered: Vec<(u64, u32)> = hashes
        .iter()
        .filter_map(|(member, hash)| hash.as_ref().ok().map(|h| (*member, *h)))
        .collect();
    if answered.len() < 2 {
        return Vec::new();
    }
    let votes = |hash: u32| answered.iter().filter(|(_, h)| *h == hash).count();
    let Some(agreed) = answered
        .iter()
        .map(|(_, hash)| *hash)
        .max_by_key(|hash| (votes(*hash), Some(*hash) == mine))
    else {
        return Vec::new();
    };
    answered
        .iter()
        .filter(|(_, hash)| *hash != agreed)
        .map(|(member, _)| *member)
        .collect()
}

impl NodeClient<'_> {
    /// This member's hash of `shard` at `revision` (see the module's doc).
    ///
    /// # Errors
    /// The revision compacted or in the future, the shard stopped, or no
    /// leader to close the revision.
    pub async fn hash_shard(&self, shard: usize, revision: Revision) -> NodeResult<u32> {
        self.check_shard(shard)?;
        hash_pages(
            |request| self.call(shard, page_call(shard, request, revision)),
            revision,
        )
        .await
    }

    /// Member `member`'s hash of `shard` at `revision`, asked over the
    /// peer transport, every [`HASH_ASK_WAIT`] until it answers or
    /// [`HASH_ANSWER_WAIT`] has passed. Asked of the shard's leader, a
    /// member it has not heard from lately is not asked.
    ///
    /// # Errors
    /// As [`NodeClient::hash_shard`] there; the member went unheard, or
    /// gave no hash in time.
    pub async fn hash_shard_on(
        &self,
        member: u64,
        shard: usize,
        revision: Revision,
    ) -> NodeResult<u32> {
        self.check_shard(shard)?;
        let since = Instant::now();
        while since.elapsed() < HASH_ANSWER_WAIT {
            let asked = self
                .call(shard, |reply| ShardCall::HashOn {
                    member,
                    revision,
                    reply,
                })
                .await?;
            if let Some(hash) = asked {
                return Ok(hash);
            }
        }
        Err(NodeError::InvalidRequest(format!(
            "member {member:x} gave no hash of shard {shard} within {HASH_ANSWER_WAIT:?}"
        )))
    }

    /// Compares every member's copy of `shard` at the shard's revision on
    /// this member now (see the module's doc); raises nothing.
    ///
    /// # Errors
    /// This member's own hash failed.
    pub async fn compare_shard(&self, shard: usize) -> NodeResult<ShardCheck> {
        self.check_shard(shard)?;
        let status = self
            .call(shard, |reply| ShardCall::Status { reply })
            .await?;
        let revision = status.revision;
        let me = self.member_id();
        let others: Vec<u64> = self
            .cluster()
            .members
            .iter()
            .map(|m| m.id)
            .filter(|id| *id != me)
            .collect();
        // Every other member is asked once first, so that their scans run
        // side by side (each keeps its hash for the asks that follow),
        // then this member scans its own copy, then the answers are
        // collected.
        let mut first = Vec::with_capacity(others.len());
        for member in &others {
            let asked = self
                .call(shard, |reply| ShardCall::HashOn {
                    member: *member,
                    revision,
                    reply,
                })
                .await;
            first.push(asked);
        }
        let mine = self.hash_shard(shard, revision).await?;
        let mut hashes = vec![(me, Ok(mine))];
        for (member, first) in others.iter().zip(first) {
            let hash = match first {
                Ok(Some(hash)) => Ok(hash),
                Err(error) => Err(error.to_string()),
                Ok(None) => self
                    .hash_shard_on(*member, shard, revision)
                    .await
                    .map_err(|e| e.to_string()),
            };
            hashes.push((*member, hash));
        }
        let differing = differing(&hashes, Some(mine));
        Ok(ShardCheck {
            shard,
            revision,
            hashes,
            differing,
        })
    }

    /// Raises a CORRUPT alarm on `shard` alone, naming `member`: the shard
    /// refuses writes once it applies it.
    ///
    /// # Errors
    /// The shard's leader did not take it.
    pub async fn raise_corrupt(&self, shard: usize, member: u64) -> NodeResult<()> {
        self.check_shard(shard)?;
        let entry = Entry::Alarm {
            action: AlarmAction::Activate,
            kind: AlarmKind::Corrupt,
            member,
        };
        self.write_at_leader(shard, entry).await.map(drop)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answers(hashes: &[(u64, Option<u32>)]) -> Vec<(u64, Result<u32, String>)> {
        hashes
            .iter()
            .map(|(m, h)| (*m, h.ok_or_else(|| "unreachable".to_string())))
            .collect()
    }

    #[test]
    fn the_member_out_of_line_with_most_is_named() {
        let hashes = answers(&[(1, Some(7)), (2, Some(7)), (3, Some(9))]);
        assert_eq!(differing(&hashes, Some(7)), vec![3]);
        // Even when it is this member.
        let hashes = answers(&[(1, Some(9)), (2, Some(7)), (3, Some(7))]);
        assert_eq!(differing(&hashes, Some(9)), vec![1]);
    }

    #[test]
    fn a_tie_goes_to_this_member_and_silence_says_nothing() {
        let hashes = answers(&[(1, Some(7)), (2, Some(9)), (3, None)]);
        assert_eq!(differing(&hashes, Some(7)), vec![2]);
        let hashes = answers(&[(1, Some(7)), (2, None), (3, None)]);
        assert!(differing(&hashes, Some(7)).is_empty());
        let hashes = answers(&[(1, Some(7)), (2, Some(7)), (3, None)]);
        assert!(differing(&hashes, Some(7)).is_empty());
    }
}
