//! Which shard a key lives on (DESIGN.md, "Runtime").
//!
//! The shard of a key is `crc32(routing_key) % shards`. The routing key is
//! the key's hash tag when it has one, else the whole key. As in Redis
//! Cluster, the tag is what lies between the first `{` and the next `}`
//! after it, when that is not empty: `{user:42}/profile` and
//! `{user:42}/cart` share a shard, so one transaction can hold both. The
//! hash is CRC-32 (IEEE), fixed forever: a key's shard is part of the data
//! directory's layout and must not change with a library version.

/// Index of a shard, `0..shards`.
pub type ShardId = u32;

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
pub fn shard_of(key: &[u8], shards: u32) -> ShardId {
    crc32fast::hash(routing_key(key)) % shards.max(1)
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
        assert_eq!(shard_of(b"123456789", u32::MAX), 0xcbf4_3926);
        assert_eq!(shard_of(b"anything", 1), 0);
        assert_eq!(shard_of(b"anything", 0), 0);
    }

    #[test]
    fn keys_spread_over_shards() {
        let shards = 4;
        let mut counts = [0u32; 4];
        for i in 0..40_000 {
            counts[shard_of(format!("key/{i:08}").as_bytes(), shards) as usize] += 1;
        }
        for count in counts {
            assert!((9_000..11_000).contains(&count), "{counts:?}");
        }
    }
}
