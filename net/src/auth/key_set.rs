//! A user's permissions as sets of keys: every permission of every role
//! it has, merged into sorted, disjoint intervals, so that a check is one
//! binary search. etcd's meanings: a permission or a request with an
//! empty `range_end` is its key alone; `range_end = "\0"` is every key
//! from `key` on; a range request is allowed only if the permissions
//! cover all of it, without a gap.

use crate::auth::record::{AuthState, PermissionKind, ROOT};

/// An interval's end: a key (excluded), or past every key.
type End = Option<Vec<u8>>;

/// Keys, as sorted disjoint intervals `[start, end)` with no two touching.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeySet(Vec<(Vec<u8>, End)>);

/// `[key, range_end)` in etcd's meaning, or `None` if it holds no key.
fn interval(key: &[u8], range_end: &[u8]) -> Option<(Vec<u8>, End)> {
    match range_end {
        [] => {
            let mut next = key.to_vec();
            next.push(0);
            Some((key.to_vec(), Some(next)))
        }
        [0] => Some((key.to_vec(), None)),
        end if end > key => Some((key.to_vec(), Some(end.to_vec()))),
        _ => None,
    }
}

/// Whether end `a` reaches at least to end `b`.
fn reaches(a: &End, b: &End) -> bool {
    match (a, b) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(a), Some(b)) => a >= b,
    }
}

impl KeySet {
    /// The keys of `(key, range_end)` pairs.
    pub fn new<'a>(ranges: impl IntoIterator<Item = (&'a [u8], &'a [u8])>) -> KeySet {
        let mut intervals: Vec<(Vec<u8>, End)> = ranges
            .into_iter()
            .filter_map(|(key, end)| interval(key, end))
            .collect();
        intervals.sort();
        let mut merged: Vec<(Vec<u8>, End)> = Vec::with_capacity(intervals.len());
        for (start, end) in intervals {
            if let Some((_, last_end)) = merged.last_mut() {
                // Overlapping or touching: one interval.
                let touches = match last_end {
                    None => true,
                    Some(last) => start <= *last,
                };
                if touches {
                    if !reaches(last_end, &end) {
                        *last_end = end;
                    }
                    continue;
                }
            }
            merged.push((start, end));
        }
        KeySet(merged)
    }

    /// Whether every key of `[key, range_end)` (etcd's meaning) is in the
    /// set; a request that holds no key is covered.
    pub fn covers(&self, key: &[u8], range_end: &[u8]) -> bool {
        let Some((start, end)) = interval(key, range_end) else {
            return true;
        };
        // The last interval starting at or before `start`.
        let at = self
            .0
            .partition_point(|(s, _)| s.as_slice() <= start.as_slice());
        let Some(index) = at.checked_sub(1) else {
            return false;
        };
        // It starts at or before the request and, the intervals being
        // disjoint and apart, is the only one that can cover its start.
        self.0
            .get(index)
            .is_some_and(|(_, held_end)| reaches(held_end, &end))
    }
}

/// What one user may read and write.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserKeys {
    /// Keys it may read.
    pub read: KeySet,
    /// Keys it may write.
    pub write: KeySet,
}

impl UserKeys {
    /// `user`'s keys in `state` (none for a user that is not there; a
    /// role that is not there gives nothing). Root's are not computed:
    /// root may do anything, which callers check first.
    pub fn of(state: &AuthState, user: &str) -> UserKeys {
        let Some(user) = state.users.get(user) else {
            return UserKeys::default();
        };
        let permissions: Vec<_> = user
            .roles
            .iter()
            .filter(|role| role.as_str() != ROOT)
            .filter_map(|role| state.roles.get(role))
            .flat_map(|role| role.permissions.iter())
            .collect();
        let of_kind = |wanted: fn(PermissionKind) -> bool| {
            KeySet::new(
                permissions
                    .iter()
                    .filter(|p| wanted(p.kind))
                    .map(|p| (p.key.as_slice(), p.range_end.as_slice())),
            )
        };
        UserKeys {
            read: of_kind(PermissionKind::reads),
            write: of_kind(PermissionKind::writes),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ranges: &[(&str, &str)]) -> KeySet {
        KeySet::new(ranges.iter().map(|(k, e)| (k.as_bytes(), e.as_bytes())))
    }

    #[test]
    fn points_prefixes_and_open_ends_are_etcd_s() {
        let keys = set(&[("a", ""), ("/app/", "/app0"), ("z", "\0")]);
        assert!(keys.covers(b"a", b""));
        assert!(!keys.covers(b"a", b"b"), "a range past the point");
        assert!(!keys.covers(b"b", b""));
        assert!(keys.covers(b"/app/x", b""));
        assert!(keys.covers(b"/app/", b"/app0"), "the prefix itself");
        assert!(keys.covers(b"/app/a", b"/app/b"));
        assert!(!keys.covers(b"/app/", b"/app1"), "past the prefix");
        assert!(!keys.covers(b"/ap", b"/app0"), "before it");
        assert!(keys.covers(b"zz", b"\0"));
        assert!(keys.covers(b"zzz", b""));
        assert!(!keys.covers(b"y", b"\0"));
        assert!(!keys.covers(b"", b"\0"), "everything");
        assert!(keys.covers(b"b", b"a"), "an empty range holds no key");
    }

    #[test]
    fn touching_permissions_cover_a_range_across_them_and_a_gap_does_not() {
        let keys = set(&[("a", "c"), ("c", "e"), ("f", "h")]);
        assert!(keys.covers(b"a", b"e"));
        assert!(keys.covers(b"b", b"d"));
        assert!(!keys.covers(b"a", b"g"), "the gap [e, f)");
        assert!(keys.covers(b"f", b"h"));
        assert!(!keys.covers(b"e", b""));
        let everything = set(&[("", "\0")]);
        assert!(everything.covers(b"", b"\0"));
        assert!(everything.covers(b"anything", b""));
        assert!(!KeySet::default().covers(b"a", b""));
    }
}
