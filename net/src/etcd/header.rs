//! The `ResponseHeader` of every answer: the cluster, this member, and the
//! revision the answer is at.

use keel_etcd_api::etcdserverpb::ResponseHeader;

use crate::etcd::convert::to_i64;
use crate::etcd::cores::Cores;

/// Makes headers for one node's answers.
#[derive(Clone)]
pub(crate) struct Headers {
    pub(crate) cores: Cores,
}

impl Headers {
    /// The header of an answer that is at no revision of its own (leases,
    /// status): etcd's names its current revision; keel's is 0 there.
    pub(crate) fn member(&self) -> ResponseHeader {
        self.at(0)
    }

    /// The header of an answer at `revision`. keel has a Raft term per
    /// shard, not one; `raft_term` is 0.
    pub(crate) fn at(&self, revision: u64) -> ResponseHeader {
        let cluster = self.cores.node().client().cluster();
        ResponseHeader {
            cluster_id: cluster.id,
            member_id: cluster.me,
            revision: to_i64(revision),
            raft_term: 0,
        }
    }
}
