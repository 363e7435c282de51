//! Where keel's logs go (docs/server.md, "Settings"): stderr, filtered by
//! `KEEL_LOG`, as text for people or as one JSON object per line.

use std::fmt;

use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::{DefaultFields, Writer};
use tracing_subscriber::fmt::{FormatFields, FormattedFields};

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Text, for people.
    Text,
    /// One JSON object per line, for collectors; a shard's events carry
    /// its span's fields (`span`: shard, member, term).
    Json,
}

/// Starts logging to stderr, filtered by `KEEL_LOG` (default `info`).
pub fn start(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("KEEL_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => logs
            .fmt_fields(ReplacingFields)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        LogFormat::Json => logs
            .json()
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// Text fields where a span field recorded again replaces its earlier
/// value: a shard's span records its term at every election, and the
/// default would append `term=` each time (the span's text would grow for
/// the life of the process).
pub struct ReplacingFields;

impl<'writer> FormatFields<'writer> for ReplacingFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        DefaultFields::new().format_fields(writer, fields)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut added = String::new();
        DefaultFields::new().format_fields(Writer::new(&mut added), fields)?;
        current.fields = replace_fields(&current.fields, &added);
        Ok(())
    }
}

/// `current`'s `name=value` fields with those `added` names replaced,
/// then the new ones. Fields are separated by single spaces: keel records
/// again only a shard's term, a number (a value with spaces, a field named
/// `message`, or a field first written with ANSI colours on a terminal
/// would not be matched, and would show twice).
fn replace_fields(current: &str, added: &str) -> String {
    let name = |field: &str| field.split_once('=').map(|(name, _)| name.to_string());
    let replaced: Vec<String> = added.split(' ').filter_map(name).collect();
    let mut out: Vec<&str> = current
        .split(' ')
        .filter(|field| !field.is_empty())
        .filter(|field| name(field).is_none_or(|n| !replaced.contains(&n)))
        .collect();
    out.extend(added.split(' ').filter(|field| !field.is_empty()));
    out.join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Lines written, shared with the test.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(bytes);
            Ok(bytes.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_span_s_term_recorded_at_every_election_is_shown_once() {
        let lines = Lines::default();
        let written = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .fmt_fields(ReplacingFields)
            .with_ansi(false)
            .with_writer(move || written.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::info_span!("shard", shard = 0, term = tracing::field::Empty);
            for term in 1..=3u64 {
                span.record("term", term);
            }
            span.in_scope(|| tracing::info!("became leader"));
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert!(text.contains("shard{shard=0 term=3}"), "{text}");
        assert_eq!(text.matches("term=").count(), 1, "{text}");
    }

    #[test]
    fn a_field_recorded_again_replaces_the_earlier_value() {
        assert_eq!(
            replace_fields("shard=0 member=ab term=0", "term=1"),
            "shard=0 member=ab term=1"
        );
        assert_eq!(replace_fields("shard=0", "term=1"), "shard=0 term=1");
        assert_eq!(replace_fields("", "term=3"), "term=3");
    }
}
