//! Which shard a key lives on (DESIGN.md, "Runtime").
//!
//! The shard of a key is `crc32(routing_key) % shards`. The routing key is
//! the key's hash tag when it has one, else the whole key. As in Redis
//! Cluster, the tag is what lies between the first `{` and the next `}`
//! after it, when that is not empty: `{user:42}/profile` and
//! `{user:42}/cart` share a shard, so one transaction can hold both. The
//! hash is CRC-32 (IEEE), fixed forever: a key's shard is part of the data
//! directory's layout and must not change with a library version.

/// The part of `key` that picks its shard.
pub fn routing_key(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|&b| b == b'{') else {
        return key;
    };
    let after = key.get(open + 1..).unwrap_or_default();
    match after.iter().position(|&b| b == b'}') {
        Some(len) if len > 0 => after.get(..len).unwrap_or(key),
        _ => key,
    }
}

/// The shard of `key` among `shards` (at least 1; 0 is taken as 1).
pub fn shard_of(key: &[u8], shards: usize) -> usize {
    // Shard counts fit in u32; the hash is 32 bits.
    (crc32fast::hash(routing_key(key)) as u64 % shards.max(1) as u64) as usize
}

/// The one shard holding every key of `[key, range_end)` (etcd's range
/// rules: an empty `range_end` is the key alone, `[0]` is everything from
/// `key` on), or `None` when the range may span shards.
///
/// A range has one shard when both ends start with the same hash tag, up
/// to its closing brace: every key between two strings with a common prefix
/// has that prefix, so it routes by the same tag. A prefix range over
/// `{user:42}/` is one shard; a range over `user/` is all of them.
pub fn shard_of_range(key: &[u8], range_end: &[u8], shards: usize) -> Option<usize> {
    if shards <= 1 || range_end.is_empty() {
        return Some(shard_of(key, shards));
    }
    let open = key.iter().position(|&b| b == b'{')?;
    let after = key.get(open + 1..)?;
    let len = after.iter().position(|&b| b == b'}')?;
    if len == 0 {
        return None;
    }
    // The prefix up to and including the tag's closing brace.
    let tagged = key.get(..open + len + 2)?;
    range_end.starts_with(tagged).then(|| shard_of(key, shards))
}

/// The end of the range holding every key that starts with `prefix`: the
/// prefix with its last byte below 0xff incremented (`[0]`, every key, when
/// there is none).
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// The core that serves `shard` on a node of `cores` cores (0 is taken
/// as 1): shard `s` lives on core `s % cores`.
pub fn core_of(shard: usize, cores: usize) -> usize {
    shard % cores.max(1)
}

/// The home shard of lease `id`: where it is granted first, revoked first,
/// and where its timer runs (keys on every shard attach to it through the
/// copies the other shards keep). The shard-aware client sends a lease's
/// keep-alives there.
pub fn home_of_lease(id: i64, shards: usize) -> usize {
    shard_of(&id.to_be_bytes(), shards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_tag_is_between_the_first_brace_and_the_next_closing_one() {
        assert_eq!(routing_key(b"{user:42}/profile"), b"user:42");
        assert_eq!(routing_key(b"app/{user:42}/cart"), b"user:42");
        assert_eq!(routing_key(b"{a}{b}"), b"a");
        assert_eq!(routing_key(b"x{a{b}c}"), b"a{b");
    }

    #[test]
    fn without_a_non_empty_tag_the_whole_key_routes() {
        for key in [&b"plain"[..], b"{}x", b"{open", b"close}", b"", b"a{"] {
            assert_eq!(routing_key(key), key);
        }
    }

    #[test]
    fn keys_with_one_tag_share_a_shard_and_the_mapping_is_fixed() {
        assert_eq!(shard_of(b"{t}/a", 7), shard_of(b"{t}/b", 7));
        assert_eq!(shard_of(b"{t}/a", 7), shard_of(b"t", 7));
        // CRC-32 (IEEE) of "123456789" is cbf43926: the layout depends on
        // exactly this function.
        assert_eq!(shard_of(b"123456789", u32::MAX as usize), 0xcbf4_3926);
        assert_eq!(shard_of(b"anything", 1), 0);
        assert_eq!(shard_of(b"anything", 0), 0);
    }

    #[test]
    fn a_range_has_one_shard_only_inside_one_hash_tag() {
        let shard = shard_of(b"user:42", 8);
        assert_eq!(shard_of_range(b"{user:42}/", b"{user:42}0", 8), Some(shard));
        assert_eq!(
            shard_of_range(b"{user:42}/a", b"{user:42}/b", 8),
            Some(shard)
        );
        assert_eq!(shard_of_range(b"{user:42}/a", b"", 8), Some(shard));
        assert_eq!(shard_of_range(b"{user:42}/a", b"{user:43}", 8), None);
        assert_eq!(shard_of_range(b"{user:42}/a", &[0], 8), None);
        assert_eq!(shard_of_range(b"user/", b"user0", 8), None);
        assert_eq!(shard_of_range(b"{}/a", b"{}/b", 8), None);
        assert_eq!(shard_of_range(b"user/", b"user0", 1), Some(0));
    }

    #[test]
    fn keys_spread_over_shards() {
        let shards = 4;
        let mut counts = [0u32; 4];
        for i in 0..40_000 {
            counts[shard_of(format!("key/{i:08}").as_bytes(), shards)] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }
}
