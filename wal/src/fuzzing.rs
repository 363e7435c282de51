//! Support for the fuzz target in `fuzz/`; not part of the API.

use crate::format::{
    header_prev_crc, reseal_frame, reseal_header, SEGMENT_HEADER_LEN, SEGMENT_MAGIC,
};

/// Makes arbitrary segment bytes pass the checksums: a header that starts
/// with the magic gets a correct CRC, and every frame from offset 64 on,
/// until one does not fit or is all zero, is chained and re-checksummed.
/// What is left to catch is structure (lengths, kinds, indexes, padding,
/// `write_start`), which is the point.
pub fn reseal(segment: &mut [u8]) {
    if !segment.starts_with(&SEGMENT_MAGIC) {
        return;
    }
    reseal_header(segment);
    let mut prev = header_prev_crc(segment);
    let mut pos = SEGMENT_HEADER_LEN;
    while let Some(rest) = segment.get_mut(pos..) {
        if rest.len() < 32 || rest.iter().take(32).all(|&b| b == 0) {
            break;
        }
        match reseal_frame(rest, prev) {
            Some((crc, len)) => {
                prev = crc;
                pos += len;
            }
            None => break,
        }
    }
}
