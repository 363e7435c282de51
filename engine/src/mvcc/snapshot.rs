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

/// What the keyspace's reads go through: the last commit, or the write
/// transaction a shard holds open across apply batches (which has every
/// applied change, committed or not).
pub(crate) enum View<'h, S: Storage> {
    Committed(ReadTxn<S>),
    Held(&'h WriteTxn<S>),
}

impl<'h, S: Storage> View<'h, S> {
    /// The view of `db` with `held` open.
    pub(crate) fn of(
        db: &crate::btree::Database<S>,
        held: &'h Option<WriteTxn<S>>,
    ) -> Result<View<'h, S>> {
        Ok(match held {
            Some(txn) => View::Held(txn),
            None => View::Committed(db.begin_read()?),
        })
    }
}

/// Rows from either kind of view.
pub(crate) enum EitherRows<A, B> {
    Committed(A),
    Held(B),
}

impl<'r, A, B> Iterator for EitherRows<A, B>
where
    A: Iterator<Item = Result<(&'r [u8], &'r [u8])>>,
    B: Iterator<Item = Result<(&'r [u8], &'r [u8])>>,
{
    type Item = Result<(&'r [u8], &'r [u8])>;

    fn next(&mut self) -> Option<Self::Item> {
        match self {
            EitherRows::Committed(rows) => rows.next(),
            EitherRows::Held(rows) => rows.next(),
        }
    }
}

impl<'r, A, B> DoubleEndedIterator for EitherRows<A, B>
where
    A: DoubleEndedIterator<Item = Result<(&'r [u8], &'r [u8])>>,
    B: DoubleEndedIterator<Item = Result<(&'r [u8], &'r [u8])>>,
{
    fn next_back(&mut self) -> Option<Self::Item> {
        match self {
            EitherRows::Committed(rows) => rows.next_back(),
            EitherRows::Held(rows) => rows.next_back(),
        }
    }
}

impl<'h, S: Storage> Snapshot for View<'h, S> {
    type Rows<'a>
        = EitherRows<Range<'a, SnapshotSource<'a, S>>, Range<'a, WriteSource<'a, S>>>
    where
        Self: 'a;

    fn rows<'a>(
        &'a self,
        tree: &[u8],
        start: Bound<&[u8]>,
        end: Bound<&[u8]>,
    ) -> Result<Self::Rows<'a>> {
        Ok(match self {
            View::Committed(snap) => EitherRows::Committed(snap.rows(tree, start, end)?),
            View::Held(txn) => EitherRows::Held(txn.rows(tree, start, end)?),
        })
    }

    fn row<'a>(&'a self, tree: &[u8], key: &[u8]) -> Result<Option<&'a [u8]>> {
        match self {
            View::Committed(snap) => snap.row(tree, key),
            View::Held(txn) => txn.row(tree, key),
        }
    }
}
