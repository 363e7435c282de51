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

use std::io::BufRead;
use std::time::Duration;

use keel_client::proto::{
    Compare, CompareResult, CompareTarget, DeleteRangeRequest, PutRequest, RangeRequest, RequestOp,
    ResponseOp, TxnRequest,
};
use keel_client::Client;
use serde_json::json;

use crate::cli::{timed, CommandResult};
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
            crate::cli::parse_lease(operand).map_err(|e| format!("{e} in {line:?}"))?,
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

/// `put k v`, `get k [end]`, `del k [end]`.
pub(crate) fn parse_op(line: &str) -> Result<RequestOp, String> {
    let words = words(line)?;
    let bytes = |s: &String| s.as_bytes().to_vec();
    match words.as_slice() {
        [put, key, value] if put == "put" => Ok(RequestOp::Put(PutRequest {
            key: bytes(key),
            value: bytes(value),
            ..PutRequest::default()
        })),
        [get, key, rest @ ..] if get == "get" && rest.len() <= 1 => {
            Ok(RequestOp::Range(RangeRequest {
                key: bytes(key),
                range_end: rest.first().map(bytes).unwrap_or_default(),
                ..RangeRequest::default()
            }))
        }
        [del, key, rest @ ..] if (del == "del" || del == "delete") && rest.len() <= 1 => {
            Ok(RequestOp::DeleteRange(DeleteRangeRequest {
                key: bytes(key),
                range_end: rest.first().map(bytes).unwrap_or_default(),
                ..DeleteRangeRequest::default()
            }))
        }
        _ => Err(format!(
            "bad operation {line:?}: expected put K V, get K, or del K"
        )),
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
    let compare = section(&mut lines, prompt("compares:"), parse_compare)?;
    let success = section(
        &mut lines,
        prompt("success requests (get, put, del):"),
        parse_op,
    )?;
    let failure = section(
        &mut lines,
        prompt("failure requests (get, put, del):"),
        parse_op,
    )?;
    let request = TxnRequest {
        compare,
        success,
        failure,
    };
    let (revision, answer) = timed(timeout, client.txn(request)).await?;
    match format {
        Format::Simple => {
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
                    ResponseOp::Put(_) => println!("OK"),
                    ResponseOp::Range(range) => {
                        for kv in &range.kvs {
                            output::print_kv(kv, false, false);
                        }
                    }
                    ResponseOp::DeleteRange(delete) => println!("{}", delete.deleted),
                    ResponseOp::Txn(_) => println!("(nested transaction)"),
                }
            }
        }
        Format::Json => output::print_json(&json!({
            "header": output::header(revision),
            "succeeded": answer.succeeded,
            "responses": answer.responses.len(),
        })),
    }
    Ok(())
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
}
