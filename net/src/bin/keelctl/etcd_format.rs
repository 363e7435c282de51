//! etcdctl's `fields` and `table` output, and the Go formatting they
//! rest on (`%q` strings, `humanize.Bytes` sizes, tablewriter's tables),
//! so that scripts written against etcdctl's output read keelctl's.

use keel_client::proto::KeyValue;

/// A string as Go's `%q` writes it: double-quoted, with `"` and `\`
/// escaped, control characters and invalid UTF-8 as escapes.
pub(crate) fn go_quote(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len() + 2);
    out.push('"');
    for chunk in bytes.utf8_chunks() {
        for c in chunk.valid().chars() {
            match c {
                '"' => out.push_str("\\\""),
                '\\' => out.push_str("\\\\"),
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\r' => out.push_str("\\r"),
                '\u{7}' => out.push_str("\\a"),
                '\u{8}' => out.push_str("\\b"),
                '\u{c}' => out.push_str("\\f"),
                '\u{b}' => out.push_str("\\v"),
                c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                    out.push_str(&format!("\\x{:02x}", c as u32));
                }
                c if c.is_control() => {
                    let code = c as u32;
                    if code <= 0xffff {
                        out.push_str(&format!("\\u{code:04x}"));
                    } else {
                        out.push_str(&format!("\\U{code:08x}"));
                    }
                }
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out.push('"');
    out
}

/// A size as Go's `humanize.Bytes` writes it (SI units: `25 kB`,
/// `2.1 MB`).
pub(crate) fn humanize_bytes(bytes: u64) -> String {
    const UNITS: [&str; 7] = ["B", "kB", "MB", "GB", "TB", "PB", "EB"];
    if bytes < 10 {
        return format!("{bytes} B");
    }
    let size = bytes as f64;
    let exponent = (size.ln() / 1000f64.ln()).floor();
    let unit = UNITS
        .get(exponent as usize)
        .copied()
        .unwrap_or(UNITS[UNITS.len() - 1]);
    let value = (size / 1000f64.powf(exponent) * 10.0 + 0.5).floor() / 10.0;
    if value < 10.0 {
        format!("{value:.1} {unit}")
    } else {
        format!("{value:.0} {unit}")
    }
}

/// The header lines of every `fields` answer. keel's answers carry a
/// revision only: no cluster id or Raft term yet.
pub(crate) fn fields_header(member_id: u64, revision: u64) {
    println!("\"ClusterID\" : 0");
    println!("\"MemberID\" : {member_id}");
    println!("\"Revision\" : {revision}");
    println!("\"RaftTerm\" : 0");
}

/// A pair's `fields` lines, each name after `prefix` (`Prev` for a
/// previous pair).
pub(crate) fn fields_kv(prefix: &str, kv: &KeyValue) {
    println!("\"{prefix}Key\" : {}", go_quote(&kv.key));
    println!("\"{prefix}CreateRevision\" : {}", kv.create_revision);
    println!("\"{prefix}ModRevision\" : {}", kv.mod_revision);
    println!("\"{prefix}Version\" : {}", kv.version);
    println!("\"{prefix}Value\" : {}", go_quote(&kv.value));
    println!("\"{prefix}Lease\" : {}", kv.lease);
}

/// A table as etcdctl draws one (tablewriter: a border, upper-case
/// headers centred, cells aligned right).
pub(crate) fn table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let headers: Vec<String> = headers
        .iter()
        .map(|h| h.replace(['_', '.'], " ").trim().to_uppercase())
        .collect();
    let widths: Vec<usize> = headers
        .iter()
        .enumerate()
        .map(|(column, header)| {
            rows.iter()
                .filter_map(|row| row.get(column))
                .map(|cell| cell.chars().count())
                .chain([header.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let border: String = widths
        .iter()
        .map(|width| format!("+{}", "-".repeat(width + 2)))
        .collect::<String>()
        + "+\n";
    let line = |cells: Vec<String>| -> String {
        cells
            .iter()
            .map(|cell| format!("| {cell} "))
            .collect::<String>()
            + "|\n"
    };
    let centred = headers
        .iter()
        .zip(&widths)
        .map(|(header, width)| {
            let gap = width.saturating_sub(header.chars().count());
            let left = gap / 2;
            format!("{}{header}{}", " ".repeat(left), " ".repeat(gap - left))
        })
        .collect();
    let mut out = border.clone();
    out += &line(centred);
    out += &border;
    for row in rows {
        let cells = widths
            .iter()
            .enumerate()
            .map(|(column, width)| {
                let cell = row.get(column).map(String::as_str).unwrap_or("");
                format!("{cell:>width$}")
            })
            .collect();
        out += &line(cells);
    }
    out += &border;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_quoted_as_go_quotes_them() {
        assert_eq!(go_quote(b"plain"), "\"plain\"");
        assert_eq!(go_quote(b"a \"b\" \\ c"), r#""a \"b\" \\ c""#);
        assert_eq!(
            go_quote(b"line\nnext\t\x01\x7f"),
            r#""line\nnext\t\x01\x7f""#
        );
        assert_eq!(go_quote("é".as_bytes()), "\"é\"");
        assert_eq!(go_quote(b"\xff"), r#""\xff""#);
    }

    #[test]
    fn sizes_are_written_as_humanize_writes_them() {
        assert_eq!(humanize_bytes(0), "0 B");
        assert_eq!(humanize_bytes(9), "9 B");
        assert_eq!(humanize_bytes(25_000), "25 kB");
        assert_eq!(humanize_bytes(24_576), "25 kB");
        assert_eq!(humanize_bytes(2_097_152), "2.1 MB");
        assert_eq!(humanize_bytes(20_480), "20 kB");
        assert_eq!(humanize_bytes(999), "999 B");
    }

    #[test]
    fn a_table_is_drawn_as_etcdctl_draws_it() {
        let drawn = table(
            &["ID", "Status", "Is Learner"],
            &[vec![
                "8e9e05c52164694d".into(),
                "started".into(),
                "false".into(),
            ]],
        );
        let expected = "\
+------------------+---------+------------+
|        ID        | STATUS  | IS LEARNER |
+------------------+---------+------------+
| 8e9e05c52164694d | started |      false |
+------------------+---------+------------+
";
        assert_eq!(drawn, expected);
    }
}
