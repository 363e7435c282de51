//! Every key-value at one revision, read page by page in key order: what
//! HashKV hashes and Snapshot streams. A page holds at most [`PAGE_KEYS`]
//! pairs and at most [`PAGE_BYTES`] bytes (fewer pairs when values are
//! large: a page refused as too large is asked for again with half as
//! many), so reading any keyspace holds one page at a time.

use keel_engine::mvcc::{self as kv, KvError, Revision};
use keel_engine::shard::{Consistency, NodeError};
use tonic::Status;

use crate::etcd::cores::{client, Cores};

/// Most pairs in a page.
pub(crate) const PAGE_KEYS: u64 = 256;
/// Most bytes a page's pairs take (a pair is at most keel's largest
/// request, 1.5 MiB, so one always fits).
pub(crate) const PAGE_BYTES: usize = 8 << 20;

/// A reader of the keyspace at one revision.
pub(crate) struct Pages {
    cores: Cores,
    revision: Revision,
    /// Where the next page starts; `None` once the last was read.
    from: Option<Vec<u8>>,
}

impl Pages {
    /// Reads every key at `revision` (which must not be compacted while
    /// the pages are read).
    pub(crate) fn at(cores: Cores, revision: Revision) -> Pages {
        Pages {
            cores,
            revision,
            from: Some(vec![0]),
        }
    }

    /// The next page, in key order; `None` after the last.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<kv::KeyValue>>, Status> {
        let Some(from) = self.from.take() else {
            return Ok(None);
        };
        let revision = self.revision;
        let page = self
            .cores
            .call(move |node, core| {
                Box::pin(async move { read_page(&node, core, from, revision).await })
            })
            .await?;
        self.from = match (page.more, page.kvs.last()) {
            (true, Some(last)) => Some([last.key.as_slice(), &[0]].concat()),
            _ => None,
        };
        Ok(Some(page.kvs))
    }
}

/// One page from `from` at `revision`, halving its pairs while it is too
/// large.
async fn read_page(
    node: &keel_engine::shard::Node,
    core: usize,
    from: Vec<u8>,
    revision: Revision,
) -> keel_engine::shard::NodeResult<kv::RangeResponse> {
    let mut keys = PAGE_KEYS;
    loop {
        let request = kv::RangeRequest {
            key: from.clone(),
            range_end: vec![0],
            limit: keys,
            revision,
            answer_limit: PAGE_BYTES,
            ..kv::RangeRequest::default()
        };
        match client(node, core)
            .range(request, Consistency::Linearizable)
            .await
        {
            Err(NodeError::Kv(KvError::AnswerTooLarge { .. })) if keys > 1 => keys /= 2,
            read => return read.map(|(_, page)| page),
        }
    }
}
