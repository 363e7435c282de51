//! raft's message types (`eraftpb`) and the helpers the `raft` crate expects
//! from `raft-proto` 0.7, built without `protoc`.
//!
//! keel patches this crate in for crates.io's `raft-proto` (see the
//! workspace's `Cargo.toml`). The schema, `proto/eraftpb.proto`, is raft-rs's,
//! unchanged (Apache-2.0, see `proto/README.md`); the Rust code here is keel's
//! and provides the same items under the same names, so `raft` builds against
//! it unchanged and encodes the same bytes.

mod conf_change;
mod conf_state;

pub use conf_change::{
    new_conf_change_single, parse_conf_change, stringify_conf_change, ConfChangeI,
};
pub use conf_state::conf_state_eq;
pub use protos::eraftpb;

// The generated code predates lints that newer compilers add.
#[allow(
    renamed_and_removed_lints,
    unknown_lints,
    missing_docs,
    unused_parens,
    mismatched_lifetime_syntaxes,
    clippy::all
)]
mod protos {
    include!(concat!(env!("OUT_DIR"), "/protos/mod.rs"));

    impl eraftpb::Snapshot {
        /// A snapshot is empty when it stands for no log index at all: raft
        /// uses `Snapshot::default()` to mean "no snapshot".
        pub fn is_empty(&self) -> bool {
            self.get_metadata().index == 0
        }
    }
}

/// The message types raft's users name most.
pub mod prelude {
    pub use crate::eraftpb::{
        ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2,
        ConfState, Entry, EntryType, HardState, Message, MessageType, Snapshot, SnapshotMetadata,
    };
}

/// Conversions raft's users rely on.
pub mod util {
    use crate::eraftpb::ConfState;

    /// `ConfState::from((voters, learners))`.
    impl<Voters, Learners> From<(Voters, Learners)> for ConfState
    where
        Voters: IntoIterator<Item = u64>,
        Learners: IntoIterator<Item = u64>,
    {
        fn from((voters, learners): (Voters, Learners)) -> Self {
            let mut state = ConfState::default();
            state.set_voters(voters.into_iter().collect());
            state.set_learners(learners.into_iter().collect());
            state
        }
    }
}

#[cfg(test)]
mod tests {
    use protobuf::Message as _;

    use crate::eraftpb::{Entry, EntryType, Message, MessageType};

    #[test]
    fn an_entry_encodes_as_the_schema_says() {
        let mut entry = Entry::default();
        entry.set_entry_type(EntryType::EntryConfChange);
        entry.term = 2;
        entry.index = 300;
        entry.data = bytes::Bytes::from_static(b"ab");
        // Field 1 (entry_type) varint 1; field 2 (term) varint 2; field 3
        // (index) varint 300 = 0xac 0x02; field 4 (data) length 2 "ab".
        let expected = [
            0x08, 0x01, 0x10, 0x02, 0x18, 0xac, 0x02, 0x22, 0x02, b'a', b'b',
        ];
        assert_eq!(entry.write_to_bytes().unwrap(), expected);
        assert_eq!(Entry::parse_from_bytes(&expected).unwrap(), entry);
    }

    #[test]
    fn an_unknown_message_type_is_refused_not_read_as_msg_hup() {
        let mut heartbeat = Message::default();
        heartbeat.set_msg_type(MessageType::MsgHeartbeat);
        heartbeat.to = 2;
        let mut bytes = heartbeat.write_to_bytes().unwrap();
        assert_eq!(bytes[..2], [0x08, MessageType::MsgHeartbeat as u8]);
        bytes[1] = 0x63; // 99: no such message type
        assert!(Message::parse_from_bytes(&bytes).is_err());
    }

    #[test]
    fn the_default_snapshot_is_empty() {
        let mut snapshot = crate::eraftpb::Snapshot::default();
        assert!(snapshot.is_empty());
        snapshot.mut_metadata().index = 1;
        assert!(!snapshot.is_empty());
    }
}
