//! Tunables of a log.

use crate::error::{Error, Result};
use crate::format::{
    frame_len, BLOCK_SIZE, MAX_PAYLOAD_LEN, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN,
};

/// How a log lays out its files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalConfig {
    /// Size every segment file is preallocated to. A multiple of 4096, at
    /// least 16 KiB and below 4 GiB (record offsets are 32-bit). Default 64 MiB.
    pub segment_size: u64,
}

impl Default for WalConfig {
    fn default() -> Self {
        WalConfig {
            segment_size: 64 << 20,
        }
    }
}

impl WalConfig {
    pub(crate) fn validate(&self) -> Result<()> {
        let size = self.segment_size;
        if !size.is_multiple_of(BLOCK_SIZE) || !(4 * BLOCK_SIZE..1 << 32).contains(&size) {
            return Err(Error::InvalidArgument(format!(
                "segment size {size} must be a multiple of {BLOCK_SIZE}, at least {} and below 4 GiB",
                4 * BLOCK_SIZE
            )));
        }
        Ok(())
    }

    /// The largest payload one record may carry. Half a segment (less the
    /// header) so that a new segment always fits the carried-over state record
    /// plus the record that caused the roll.
    pub fn max_payload(&self) -> usize {
        let usable = (self.segment_size as usize).saturating_sub(SEGMENT_HEADER_LEN) / 2;
        let mut max = usable.saturating_sub(RECORD_HEADER_LEN) & !7;
        while max > 0 && frame_len(max) > usable {
            max -= 8;
        }
        max.min(MAX_PAYLOAD_LEN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_segment_size() {
        assert!(WalConfig::default().validate().is_ok());
        assert!(WalConfig {
            segment_size: 4096 * 4
        }
        .validate()
        .is_ok());
        assert!(WalConfig {
            segment_size: 4096 * 4 + 1
        }
        .validate()
        .is_err());
        assert!(WalConfig { segment_size: 4096 }.validate().is_err());
        assert!(WalConfig {
            segment_size: 1 << 32
        }
        .validate()
        .is_err());
    }

    #[test]
    fn two_max_records_fit_a_segment() {
        for size in [16 << 10, 64 << 10, 64 << 20] {
            let config = WalConfig { segment_size: size };
            let max = config.max_payload();
            assert!(SEGMENT_HEADER_LEN + 2 * frame_len(max) <= size as usize);
        }
        assert_eq!(WalConfig::default().max_payload(), MAX_PAYLOAD_LEN);
    }
}
