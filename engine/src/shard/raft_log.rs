//! raft-rs logs through `slog`; keel logs through `tracing`. This drain
//! hands raft-rs' records to `tracing` (target `raft`), its key-value pairs
//! in one `raft` field, so that they land in the shard's span (its shard,
//! member and term) like keel's own events (docs/server.md, "Logs").

use std::fmt::Write as _;

use slog::{Drain, Level, OwnedKVList, Record, Serializer, KV};

/// A `slog` drain that emits `tracing` events.
pub(crate) struct TracingDrain;

/// A logger for raft-rs that goes to `tracing`.
pub(crate) fn raft_logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}

fn enabled(level: Level) -> bool {
    match level {
        Level::Critical | Level::Error => tracing::enabled!(target: "raft", tracing::Level::ERROR),
        Level::Warning => tracing::enabled!(target: "raft", tracing::Level::WARN),
        Level::Info => tracing::enabled!(target: "raft", tracing::Level::INFO),
        Level::Debug => tracing::enabled!(target: "raft", tracing::Level::DEBUG),
        Level::Trace => tracing::enabled!(target: "raft", tracing::Level::TRACE),
    }
}

/// `key=value` pairs, space-separated.
#[derive(Default)]
struct Pairs(String);

impl Serializer for Pairs {
    fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments) -> slog::Result {
        if !self.0.is_empty() {
            self.0.push(' ');
        }
        // Writing to a String cannot fail.
        let _ = write!(self.0, "{key}={value}");
        Ok(())
    }
}

impl Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &Record<'_>, values: &OwnedKVList) -> Result<(), slog::Never> {
        let level = record.level();
        if !enabled(level) {
            return Ok(());
        }
        let mut pairs = Pairs::default();
        // Serializing to a String cannot fail.
        let _ = record.kv().serialize(record, &mut pairs);
        let _ = values.serialize(record, &mut pairs);
        let message = record.msg();
        let raft = pairs.0.as_str();
        match level {
            Level::Critical | Level::Error => {
                tracing::error!(target: "raft", raft, "{message}")
            }
            Level::Warning => tracing::warn!(target: "raft", raft, "{message}"),
            Level::Info => tracing::info!(target: "raft", raft, "{message}"),
            Level::Debug => tracing::debug!(target: "raft", raft, "{message}"),
            Level::Trace => tracing::trace!(target: "raft", raft, "{message}"),
        }
        Ok(())
    }
}
