//! Where the first JSON object in a buffer ends, found by looking at each
//! byte once however the bytes arrive: a streamed body is parsed only once
//! a whole message is in, never again from its start at every chunk
//! (which a client sending a large message a byte at a time would turn
//! into quadratic work on the front's one thread).

/// A scan that goes on where the last one stopped.
#[derive(Debug, Default)]
pub(crate) struct Framer {
    /// Bytes of the buffer already looked at.
    scanned: usize,
    /// Open objects and arrays.
    depth: usize,
    in_string: bool,
    escaped: bool,
    /// Whether the first `{` was seen.
    started: bool,
}

/// What a scan found.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Framed {
    /// The first object ends before this offset; the framer starts afresh
    /// for what follows it (the caller drains these bytes).
    Complete(usize),
    /// More bytes are needed.
    Incomplete,
    /// Something other than whitespace before the first `{`.
    NotAnObject,
}

impl Framer {
    /// Scans the bytes of `buffered` it has not seen yet.
    pub(crate) fn scan(&mut self, buffered: &[u8]) -> Framed {
        while let Some(&byte) = buffered.get(self.scanned) {
            self.scanned += 1;
            if self.in_string {
                if self.escaped {
                    self.escaped = false;
                } else if byte == b'\\' {
                    self.escaped = true;
                } else if byte == b'"' {
                    self.in_string = false;
                }
                continue;
            }
            match byte {
                b'{' | b'[' if self.started => self.depth += 1,
                b'{' => {
                    self.started = true;
                    self.depth = 1;
                }
                b'"' if self.started => self.in_string = true,
                b'}' | b']' if self.started => {
                    self.depth = self.depth.saturating_sub(1);
                    if self.depth == 0 {
                        let end = self.scanned;
                        *self = Framer::default();
                        return Framed::Complete(end);
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                _ if !self.started => return Framed::NotAnObject,
                _ => {}
            }
        }
        Framed::Incomplete
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `text` a byte at a time; answers where each object ended.
    fn ends(text: &str) -> Vec<usize> {
        let bytes = text.as_bytes();
        let (mut framer, mut ends, mut from) = (Framer::default(), Vec::new(), 0);
        for len in 1..=bytes.len() {
            if let Framed::Complete(end) = framer.scan(&bytes[from..len]) {
                from += end;
                ends.push(from);
            }
        }
        ends
    }

    #[test]
    fn objects_end_where_their_braces_close_outside_strings() {
        let text = r#" {"a": "}{\"}", "b": [1, {"c": 2}]}
{"d": {}}"#;
        let first = text.find('\n').unwrap();
        assert_eq!(ends(text), vec![first, text.len()]);
    }

    #[test]
    fn anything_but_an_object_is_refused_before_it_starts() {
        assert_eq!(Framer::default().scan(b"  [1]"), Framed::NotAnObject);
        assert_eq!(Framer::default().scan(b"\"x\""), Framed::NotAnObject);
        assert_eq!(Framer::default().scan(b"} {"), Framed::NotAnObject);
        assert_eq!(Framer::default().scan(b"  {\"a\": 1"), Framed::Incomplete);
    }
}
