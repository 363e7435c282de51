//! One read interface over a committed snapshot and over the open write
//! transaction, so ranges inside a transaction (which see its earlier
//! writes) and ordinary ranges share their code.

use std::ops::Bound;

use crate::btree::{Range, ReadTxn, SnapshotSource, Storage, WriteSource, WriteTxn};
use crate::error::Result;

/// Reads rows of the keyspace's trees.
pub(crate) trait Snapshot {
    /// Rows in key order, reversible.
    type Rows<'a>: DoubleEndedIterator<Item = Result<(&'a [u8], &'a [u8])>>
    where
        Self: 'a;

    /// Rows of `tree` within the bounds; a missing tree has none.
    fn rows<'a>(
        &'a self,
        tree: &[u8],
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<Self::Rows<'a>>;

    /// The row of `tree` under `key`.
    fn row<'a>(&'a self, tree: &[u8], key: &[u8]) -> Result<Option<&'a [u8]>>;
}

impl<S: Storage> Snapshot for ReadTxn<S> {
    type Rows<'a>
        = Range<'a, SnapshotSource<'a, S>>
    where
        S: 'a;

    fn rows<'a>(
        &'a self,
        tree: &[u8],
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<Self::Rows<'a>> {
        self.view(tree)?.range(start, end)
    }

    fn row<'a>(&'a self, tree: &[u8], key: &[u8]) -> Result<Option<&'a [u8]>> {
        self.view(tree)?.get(key)
    }
}

impl<S: Storage> Snapshot for WriteTxn<S> {
    type Rows<'a>
        = Range<'a, WriteSource<'a, S>>
    where
        S: 'a;

    fn rows<'a>(
        &'a self,
        tree: &[u8],
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<Self::Rows<'a>> {
        self.view(tree)?.range(start, end)
    }

    fn row<'a>(&'a self, tree: &[u8], key: &[u8]) -> Result<Option<&'a [u8]>> {
        self.view(tree)?.get(key)
    }
}
