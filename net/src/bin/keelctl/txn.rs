//! `keelctl txn`: etcdctl's transaction syntax, read from stdin.
//!
//! ```text
//! value("k") = "v"          compares, one per line: value, mod, create,
//! mod("k") > "5"            version or lease; = != < >
//!                           (blank line)
//! put k "new value"         success operations: put, get, del
//!                           (blank line)
//! get k                     failure operations
//! ```
//!
//! Operations take etcdctl's flags: `get k --prefix`, `get k --limit 2`,
//! `put k v --prev-kv`, `put k v --lease 1a2b`, `del k --from-key`, ... An
//! input that cannot be read fails with etcdctl's status 3.

use std::io::BufRead;
use std::time::Duration;

use keel_client::proto::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    ResponseOp, TxnRequest,
};
use keel_client::Client;
use serde_json::json;

use crate::cli::{timed, CommandResult, Failure};
use crate::etcd_format::fields_header;
use crate::output::{self, Format};

/// Splits a line into words; double quotes group words and `\"` escapes.
fn words(line: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let mut current = String::new();
    let mut quoted = false;
    let mut in_word = false;
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' if quoted => current.extend(chars.next()),
            '"' => {
                quoted = !quoted;
                in_word = true;
            }
            c if c.is_whitespace() && !quoted => {
                if in_word {
                    words.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            c => {
                current.push(c);
                in_word = true;
            }
        }
    }
    if quoted {
        return Err(format!("unterminated quote in {line:?}"));
    }
    if in_word {
        words.push(current);
    }
    Ok(words)
}

/// `value("k") = "v"` and the like.
pub(crate) fn parse_compare(line: &str) -> Result<Compare, String> {
    let bad = || format!("bad compare {line:?}: expected e.g. value(\"key\") = \"v\"");
    let open = line.find('(').ok_or_else(bad)?;
    let close = line.rfind(')').ok_or_else(bad)?;
    let target = line.get(..open).ok_or_else(bad)?.trim();
    let key = words(line.get(open + 1..close).ok_or_else(bad)?)?;
    let [key] = key.as_slice() else {
        return Err(bad());
    };
    let rest = words(line.get(close + 1..).ok_or_else(bad)?)?;
    let [op, operand] = rest.as_slice() else {
        return Err(bad());
    };
    let result = match op.as_str() {
        "=" | "==" => CompareResult::Equal,
        "!=" => CompareResult::NotEqual,
        "<" => CompareResult::Less,
        ">" => CompareResult::Greater,
        _ => return Err(bad()),
    };
    let number = |what: &str| {
        operand
            .parse::<u64>()
            .map_err(|e| format!("bad {what} {operand:?} in {line:?}: {e}"))
    };
    let target = match target {
        "value" | "val" => CompareTarget::Value(operand.as_bytes().to_vec()),
        "mod" | "m" => CompareTarget::Mod(number("revision")?),
        "create" | "crt" | "c" => CompareTarget::Create(number("revision")?),
        "version" | "ver" => CompareTarget::Version(number("version")?),
        // Hex, as etcdctl parses it and as lease ids are printed.
        "lease" => CompareTarget::Lease(
            crate::cli::parse_lease(operand).map_err(|e| format!("{} in {line:?}", e.message))?,
        ),
        _ => return Err(bad()),
    };
    Ok(Compare {
        key: key.as_bytes().to_vec(),
        range_end: Vec::new(),
        target,
        result,
    })
}

/// An operation's words split into its arguments and its flags
/// (`--name` or `--name=value`, or `--name value` for a flag that takes
/// one).
struct OpWords {
    arguments: Vec<String>,
    flags: Vec<(String, Option<String>)>,
}

/// Flags whose value is the next word.
const FLAGS_WITH_VALUES: [&str; 6] = ["lease", "limit", "rev", "sort-by", "order", "consistency"];

impl OpWords {
    fn split(words: Vec<String>) -> OpWords {
        let mut arguments = Vec::new();
        let mut flags = Vec::new();
        let mut words = words.into_iter();
        while let Some(word) = words.next() {
            match word.strip_prefix("--") {
                Some(flag) => match flag.split_once('=') {
                    Some((name, value)) => flags.push((name.to_string(), Some(value.to_string()))),
                    None if FLAGS_WITH_VALUES.contains(&flag) => {
                        flags.push((flag.to_string(), words.next()));
                    }
                    None => flags.push((flag.to_string(), None)),
                },
                None => arguments.push(word),
            }
        }
        OpWords { arguments, flags }
    }

    fn has(&self, name: &str) -> bool {
        self.flags.iter().any(|(flag, _)| flag == name)
    }

    fn value(&self, name: &str) -> Option<&str> {
        self.flags
            .iter()
            .find(|(flag, _)| flag == name)
            .and_then(|(_, value)| value.as_deref())
    }

    fn number(&self, name: &str) -> Result<u64, String> {
        self.value(name)
            .map(|v| {
                v.parse::<u64>()
                    .map_err(|e| format!("bad --{name} {v:?}: {e}"))
            })
            .transpose()
            .map(Option::unwrap_or_default)
    }

    /// Refuses flags the operation does not take.
    fn only(&self, allowed: &[&str], line: &str) -> Result<(), String> {
        match self
            .flags
            .iter()
            .find(|(flag, _)| !allowed.contains(&flag.as_str()))
        {
            Some((flag, _)) => Err(format!("unknown flag --{flag} in {line:?}")),
            None => Ok(()),
        }
    }

    /// The key and range end, with `--prefix` or `--from-key` as etcdctl
    /// takes them.
    fn range(&self, key: &str, end: Option<&String>) -> Result<(Vec<u8>, Vec<u8>), String> {
        let key = key.as_bytes().to_vec();
        match (end, self.has("prefix"), self.has("from-key")) {
            (Some(end), false, false) => Ok((key, end.as_bytes().to_vec())),
            (None, true, false) => Ok(keel_client::prefix_range(&key)),
            (None, false, true) if key.is_empty() => Ok((vec![0], vec![0])),
            (None, false, true) => Ok((key, vec![0])),
            (None, false, false) => Ok((key, Vec::new())),
            _ => Err("give only one of a range end, --prefix and --from-key".to_string()),
        }
    }
}

/// `put k v`, `get k [end]`, `del k [end]`, each with etcdctl's flags.
pub(crate) fn parse_op(line: &str) -> Result<RequestOp, String> {
    let words = OpWords::split(words(line)?);
    let bad = || format!("bad operation {line:?}: expected put K V, get K [END], or del K [END]");
    let Some((verb, arguments)) = words.arguments.split_first() else {
        return Err(bad());
    };
    match (verb.as_str(), arguments) {
        ("put", [key, value]) => {
            words.only(&["prev-kv", "lease", "ignore-value", "ignore-lease"], line)?;
            let lease = match words.value("lease") {
                Some(id) => crate::cli::parse_lease(id).map_err(|f| f.message)?,
                None => 0,
            };
            Ok(RequestOp::Put(PutRequest {
                key: key.as_bytes().to_vec(),
                value: value.as_bytes().to_vec(),
                lease,
                prev_kv: words.has("prev-kv"),
                ignore_value: words.has("ignore-value"),
                ignore_lease: words.has("ignore-lease"),
            }))
        }
        ("get", [key, end @ ..]) if end.len() <= 1 => {
            words.only(
                &[
                    "prefix",
                    "from-key",
                    "limit",
                    "rev",
                    "keys-only",
                    "count-only",
                    "sort-by",
                    "order",
                ],
                line,
            )?;
            let (key, range_end) = words.range(key, end.first())?;
            let sort_target = match words
                .value("sort-by")
                .map(str::to_ascii_uppercase)
                .as_deref()
            {
                None | Some("KEY") => keel_client::proto::SortTarget::Key,
                Some("VERSION") => keel_client::proto::SortTarget::Version,
                Some("CREATE") => keel_client::proto::SortTarget::Create,
                Some("MODIFY") => keel_client::proto::SortTarget::Mod,
                Some("VALUE") => keel_client::proto::SortTarget::Value,
                Some(other) => return Err(format!("bad sort target {other}")),
            };
            let sort_order = match words.value("order").map(str::to_ascii_uppercase).as_deref() {
                Some("DESCEND") => keel_client::proto::SortOrder::Descend,
                Some("ASCEND") => keel_client::proto::SortOrder::Ascend,
                None if words.has("sort-by") => keel_client::proto::SortOrder::Ascend,
                None => keel_client::proto::SortOrder::None,
                Some(other) => return Err(format!("bad sort order {other}")),
            };
            Ok(RequestOp::Range(RangeRequest {
                key,
                range_end,
                limit: words.number("limit")?,
                revision: words.number("rev")?,
                keys_only: words.has("keys-only"),
                count_only: words.has("count-only"),
                sort_target,
                sort_order,
                ..RangeRequest::default()
            }))
        }
        ("del" | "delete", [key, end @ ..]) if end.len() <= 1 => {
            words.only(&["prefix", "from-key", "prev-kv"], line)?;
            let (key, range_end) = words.range(key, end.first())?;
            Ok(RequestOp::DeleteRange(DeleteRangeRequest {
                key,
                range_end,
                prev_kv: words.has("prev-kv"),
            }))
        }
        _ => Err(bad()),
    }
}

/// Reads lines up to a blank line (or the end of input).
fn section<T>(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    prompt: Option<&str>,
    parse: impl Fn(&str) -> Result<T, String>,
) -> Result<Vec<T>, String> {
    if let Some(prompt) = prompt {
        println!("{prompt}");
    }
    let mut parsed = Vec::new();
    for line in lines {
        let line = line.map_err(|e| format!("reading stdin: {e}"))?;
        let line = line.trim();
        if line.is_empty() {
            break;
        }
        parsed.push(parse(line)?);
    }
    Ok(parsed)
}

pub(crate) async fn run(
    client: &Client,
    timeout: Duration,
    format: Format,
    interactive: bool,
) -> CommandResult {
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    let prompt = |text| interactive.then_some(text);
    if format == Format::Table {
        return Err(Failure::unsupported(format));
    }
    // Input that cannot be read is etcdctl's ExitInvalidInput.
    let invalid = |message: String| Failure::new(Failure::INVALID_INPUT, message);
    let compare = section(&mut lines, prompt("compares:"), parse_compare).map_err(invalid)?;
    let success = section(
        &mut lines,
        prompt("success requests (get, put, del):"),
        parse_op,
    )
    .map_err(invalid)?;
    let failure = section(
        &mut lines,
        prompt("failure requests (get, put, del):"),
        parse_op,
    )
    .map_err(invalid)?;
    let request = TxnRequest {
        compare,
        success,
        failure,
    };
    let (revision, answer) = timed(timeout, client.txn(request)).await?;
    match format {
        Format::Simple | Format::Table => {
            println!(
                "{}",
                if answer.succeeded {
                    "SUCCESS"
                } else {
                    "FAILURE"
                }
            );
            for response in &answer.responses {
                println!();
                match response {
                    ResponseOp::Put(put) => {
                        println!("OK");
                        if let Some(prev) = &put.prev_kv {
                            output::print_kv(prev, false);
                        }
                    }
                    ResponseOp::Range(range) => {
                        for kv in &range.kvs {
                            output::print_kv(kv, false);
                        }
                    }
                    ResponseOp::DeleteRange(delete) => {
                        println!("{}", delete.deleted);
                        for kv in &delete.prev_kvs {
                            output::print_kv(kv, false);
                        }
                    }
                    ResponseOp::Txn(_) => println!("(nested transaction)"),
                }
            }
        }
        Format::Json => output::print_json(&txn_json(revision, &answer)),
        Format::Fields => {
            fields_header(0, revision);
            println!("\"Succeeded\" : {}", answer.succeeded);
            for response in &answer.responses {
                match response {
                    ResponseOp::Put(put) => {
                        fields_header(0, revision);
                        if let Some(prev) = &put.prev_kv {
                            crate::etcd_format::fields_kv("Prev", prev);
                        }
                    }
                    ResponseOp::Range(range) => crate::kv::range_fields(revision, range),
                    ResponseOp::DeleteRange(delete) => crate::kv::delete_fields(revision, delete),
                    ResponseOp::Txn(_) => println!("\"Unknown\" : \"nested transaction\""),
                }
            }
        }
    }
    Ok(())
}

/// A transaction's answer as etcdctl's JSON: each operation's answer
/// under `Response`, named by its kind; `succeeded` left out when false.
fn txn_json(revision: u64, answer: &keel_client::proto::TxnResponse) -> serde_json::Value {
    let responses: Vec<serde_json::Value> = answer
        .responses
        .iter()
        .map(|response| match response {
            ResponseOp::Put(put) => {
                let mut value = json!({ "header": output::header(revision) });
                if let Some(prev) = &put.prev_kv {
                    value["prev_kv"] = output::kv_json(prev);
                }
                json!({ "Response": { "ResponsePut": value } })
            }
            ResponseOp::Range(range) => {
                json!({ "Response": { "ResponseRange": crate::kv::range_json(revision, range) } })
            }
            ResponseOp::DeleteRange(delete) => json!({
                "Response": { "ResponseDeleteRange": crate::kv::delete_json(revision, delete) }
            }),
            ResponseOp::Txn(nested) => {
                json!({ "Response": { "ResponseTxn": txn_json(revision, nested) } })
            }
        })
        .collect();
    let mut value = json!({ "header": output::header(revision) });
    if answer.succeeded {
        value["succeeded"] = json!(true);
    }
    if !responses.is_empty() {
        value["responses"] = json!(responses);
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn etcdctl_compares_and_operations_parse() {
        let c = parse_compare(r#"value("k 1") = "a \"b\"""#).unwrap();
        assert_eq!(c.key, b"k 1");
        assert_eq!(c.target, CompareTarget::Value(b"a \"b\"".to_vec()));
        assert_eq!(c.result, CompareResult::Equal);
        let c = parse_compare(r#"mod("k") > "5""#).unwrap();
        assert_eq!(
            (c.target, c.result),
            (CompareTarget::Mod(5), CompareResult::Greater)
        );
        assert!(parse_compare(r#"mod("k") > "x""#).is_err());
        assert!(parse_compare(r#"size("k") = "1""#).is_err());
        assert!(matches!(parse_op(r#"put k "v w""#), Ok(RequestOp::Put(p)) if p.value == b"v w"));
        assert!(matches!(parse_op("get k"), Ok(RequestOp::Range(_))));
        assert!(matches!(parse_op("del k"), Ok(RequestOp::DeleteRange(_))));
        assert!(parse_op("put k").is_err());
    }

    #[test]
    fn operations_take_etcdctls_flags() {
        let Ok(RequestOp::Range(get)) = parse_op("get app/ --prefix --limit 2 --keys-only") else {
            panic!("a get with flags");
        };
        assert_eq!(
            (
                get.key.as_slice(),
                get.range_end.as_slice(),
                get.limit,
                get.keys_only
            ),
            (&b"app/"[..], &b"app0"[..], 2, true)
        );
        let Ok(RequestOp::Put(put)) = parse_op("put k v --prev-kv --lease=1f") else {
            panic!("a put with flags");
        };
        assert!(put.prev_kv);
        assert_eq!(put.lease, 0x1f);
        let Ok(RequestOp::DeleteRange(del)) = parse_op("del k --from-key --prev-kv") else {
            panic!("a del with flags");
        };
        assert_eq!((del.range_end.as_slice(), del.prev_kv), (&[0u8][..], true));
        // Not taken as a range end, as before.
        assert!(parse_op("get k --bogus").is_err());
        assert!(parse_op("put k v --prefix").is_err());
    }
}
