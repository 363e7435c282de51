//! What a call does after an attempt failed: follow the leader the member
//! named, try another member (now, or after a backoff), or give up.
//!
//! The rule that matters: a write is sent again only when the failure says
//! it did not take effect (refused by a member that does not lead its
//! shard, or never sent). A write that was sent and not answered may have
//! taken effect; it is reported as [`Error::Indeterminate`], never retried
//! (a retried put could apply twice, a retried transaction could see its
//! own first attempt).

use std::time::Duration;

use keel_proto::{ErrorCode, Request};

use crate::error::Error;

/// The first wait after a member answered that no leader is known.
pub(crate) const FIRST_BACKOFF: Duration = Duration::from_millis(25);
/// The longest wait between attempts: an election takes 0.6 to 1 s, and a
/// longer wait would add up to itself to the call once it is over (etcd's
/// client waits 25 ms between attempts, without growing).
pub(crate) const MOST_BACKOFF: Duration = Duration::from_millis(100);

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// Send it to the member with this id (the shard's leader, as the
    /// member that refused it knew).
    Follow(u64),
    /// Send it to another member; after a backoff when `wait` (no leader
    /// is known: an election is going on).
    OtherMember { wait: bool },
    /// Answer the caller with the error.
    GiveUp,
}

/// Whether sending `request` twice does no harm: reads, and renewals.
pub(crate) fn is_retry_safe(request: &Request) -> bool {
    match request {
        Request::Range(_)
        | Request::Status
        | Request::LeaseKeepAlive { .. }
        | Request::LeaseTimeToLive { .. }
        | Request::LeaseLeases
        | Request::WatchProgress => true,
        Request::Alarm { action, .. } => *action == keel_proto::AlarmAction::Get,
        Request::Member { action, .. } => *action == keel_proto::MemberAction::List,
        // Placement changes are idempotent; "every shard the member that
        // takes it leads" is not, sent to another member.
        Request::Leader { action, shard, .. } => {
            *action != keel_proto::LeaderAction::Move || *shard != keel_proto::ALL_SHARDS
        }
        _ => false,
    }
}

/// Whether `request` means something only on the member it reaches, and
/// so is never sent to another: a move of every shard that member leads.
pub(crate) fn is_bound_to_member(request: &Request) -> bool {
    matches!(
        request,
        Request::Leader {
            action: keel_proto::LeaderAction::Move,
            shard: keel_proto::ALL_SHARDS,
            ..
        }
    )
}

/// Whether `request`, sent where `to_one_shard` says, is a write of one
/// shard, all or nothing: a refusal (`NotLeader`) means none of it was
/// done. A write that fans out over shards (a range delete or compaction
/// across shards, a lease grant or revoke, which every shard mirrors) can
/// be refused by one shard after others applied their part.
pub(crate) fn is_one_shard_write(request: &Request, to_one_shard: bool) -> bool {
    to_one_shard
        && matches!(
            request,
            Request::Put(_) | Request::DeleteRange(_) | Request::Txn(_)
        )
}

/// Whether `error`, for a request that was sent, leaves its effect unknown.
pub(crate) fn leaves_outcome_unknown(error: &Error) -> bool {
    leaves_outcome_unknown_for(error, true)
}

/// [`leaves_outcome_unknown`], for a write of one shard or not: a refusal
/// of a write that fans out may come after part of it applied.
pub(crate) fn leaves_outcome_unknown_for(error: &Error, one_shard: bool) -> bool {
    if !one_shard
        && matches!(
            error,
            Error::Server {
                code: ErrorCode::NotLeader | ErrorCode::NoLeader,
                ..
            }
        )
    {
        return true;
    }
    match error {
        Error::Disconnected | Error::Timeout(_) => true,
        Error::Server { code, .. } => matches!(
            code,
            ErrorCode::OutcomeUnknown | ErrorCode::ShardStopped | ErrorCode::ShuttingDown
        ),
        _ => false,
    }
}

/// What to do after `error`, for a request that is safe to send again
/// (`retry_safe`) or not, and is a write of one shard or not (`one_shard`,
/// [`is_one_shard_write`]).
pub(crate) fn next(error: &Error, retry_safe: bool, one_shard: bool) -> Next {
    match error {
        // Possibly refused part-way: never sent again.
        Error::Server {
            code: ErrorCode::NotLeader | ErrorCode::NoLeader,
            ..
        } if !retry_safe && !one_shard => Next::GiveUp,
        Error::Server {
            code: ErrorCode::NotLeader,
            leader,
            ..
        } if *leader != 0 => Next::Follow(*leader),
        Error::Server {
            code: ErrorCode::NotLeader | ErrorCode::NoLeader,
            ..
        } => Next::OtherMember { wait: true },
        // A member that cannot check auth now (starting, its shard 0
        // stopped, too many logins) did nothing: another may.
        Error::Server {
            code: ErrorCode::AuthUnavailable,
            ..
        } => Next::OtherMember { wait: true },
        // Nothing was sent, or nothing was done.
        Error::Connect { .. }
        | Error::Server {
            code: ErrorCode::Learner,
            ..
        } => Next::OtherMember { wait: false },
        error if leaves_outcome_unknown(error) => {
            if retry_safe {
                Next::OtherMember { wait: false }
            } else {
                Next::GiveUp
            }
        }
        _ => Next::GiveUp,
    }
}

/// The wait after `backoff`: doubled, up to [`MOST_BACKOFF`].
pub(crate) fn grow(backoff: Duration) -> Duration {
    backoff.saturating_mul(2).min(MOST_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_proto::{PutRequest, RangeRequest};

    fn server(code: ErrorCode, leader: u64) -> Error {
        Error::Server {
            code,
            message: String::new(),
            revision: 0,
            leader,
        }
    }

    #[test]
    fn a_refusal_naming_the_leader_is_followed_for_reads_and_writes() {
        for safe in [true, false] {
            assert_eq!(
                next(&server(ErrorCode::NotLeader, 7), safe, true),
                Next::Follow(7)
            );
        }
    }

    #[test]
    fn no_known_leader_waits_then_tries_another_member() {
        for error in [
            server(ErrorCode::AuthUnavailable, 0),
            server(ErrorCode::NotLeader, 0),
            server(ErrorCode::NoLeader, 0),
        ] {
            assert_eq!(next(&error, false, true), Next::OtherMember { wait: true });
        }
    }

    #[test]
    fn a_write_sent_and_not_answered_is_never_sent_again() {
        for error in [
            Error::Disconnected,
            Error::Timeout(Duration::from_secs(1)),
            server(ErrorCode::ShardStopped, 0),
            server(ErrorCode::OutcomeUnknown, 0),
            server(ErrorCode::ShuttingDown, 0),
        ] {
            assert!(leaves_outcome_unknown(&error), "{error:?}");
            assert_eq!(next(&error, false, true), Next::GiveUp, "{error:?}");
            assert_eq!(next(&error, true, true), Next::OtherMember { wait: false });
        }
    }

    #[test]
    fn a_write_never_sent_goes_to_another_member() {
        let error = Error::Connect {
            endpoints: "a".into(),
            reason: "refused".into(),
        };
        assert!(!leaves_outcome_unknown(&error));
        assert_eq!(next(&error, false, true), Next::OtherMember { wait: false });
    }

    #[test]
    fn a_plain_refusal_is_the_callers() {
        assert_eq!(
            next(&server(ErrorCode::Compacted, 0), true, false),
            Next::GiveUp
        );
        assert!(!leaves_outcome_unknown(&server(ErrorCode::Compacted, 0)));
    }

    #[test]
    fn a_write_across_shards_refused_part_way_is_never_sent_again() {
        let refused = server(ErrorCode::NotLeader, 7);
        let put = Request::Put(PutRequest::default());
        let grant = Request::LeaseGrant { id: 0, ttl: 5 };
        assert!(is_one_shard_write(&put, true));
        assert!(!is_one_shard_write(&put, false));
        assert!(!is_one_shard_write(&grant, true));
        assert_eq!(next(&refused, false, false), Next::GiveUp);
        assert!(leaves_outcome_unknown_for(&refused, false));
        assert!(!leaves_outcome_unknown_for(&refused, true));
        // A read across shards is still sent on.
        assert_eq!(next(&refused, true, false), Next::Follow(7));
    }

    #[test]
    fn only_reads_and_renewals_are_safe_to_send_twice() {
        assert!(is_retry_safe(&Request::Range(RangeRequest::default())));
        assert!(is_retry_safe(&Request::LeaseKeepAlive { id: 1 }));
        assert!(!is_retry_safe(&Request::Put(PutRequest::default())));
        assert!(!is_retry_safe(&Request::LeaseGrant { id: 0, ttl: 5 }));
        let move_all = Request::Leader {
            action: keel_proto::LeaderAction::Move,
            shard: keel_proto::ALL_SHARDS,
            member_id: 7,
        };
        let move_one = Request::Leader {
            action: keel_proto::LeaderAction::Move,
            shard: 2,
            member_id: 7,
        };
        assert!(is_bound_to_member(&move_all) && !is_retry_safe(&move_all));
        assert!(!is_bound_to_member(&move_one) && is_retry_safe(&move_one));
        assert!(!is_bound_to_member(&Request::Status));
    }

    #[test]
    fn backoff_doubles_up_to_its_ceiling() {
        assert_eq!(grow(FIRST_BACKOFF), FIRST_BACKOFF * 2);
        assert_eq!(grow(MOST_BACKOFF), MOST_BACKOFF);
    }
}
