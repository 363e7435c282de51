//! put, get, del, watch.

use std::io::Read;
use std::time::Duration;

use keel_client::proto::{
    DeleteRangeRequest, PutRequest, RangeRequest, SortOrder, SortTarget, WatchCreate,
};
use keel_client::{prefix_range, Client};
use serde_json::json;

use crate::cli::KeyRange;
use crate::cli::{
    describe, parse_lease, timed, CommandResult, Consistency, DelArgs, Failure, GetArgs, Order,
    PutArgs, SortBy, WatchArgs,
};
use crate::etcd_format::{fields_header, fields_kv};
use crate::output::{self, Format};

/// The key and range end a command's arguments ask for.
/// As etcdctl: `"" --prefix` and `"" --from-key` are every key (key and
/// end `"\0"`).
fn key_range(range: KeyRange) -> Result<(Vec<u8>, Vec<u8>), Failure> {
    let key = range.key.into_bytes();
    match (range.range_end, range.prefix, range.from_key) {
        (Some(end), false, false) => Ok((key, end.into_bytes())),
        (None, true, false) => Ok(prefix_range(&key)),
        (None, false, true) if key.is_empty() => Ok((vec![0], vec![0])),
        (None, false, true) => Ok((key, vec![0])),
        (None, false, false) => Ok((key, Vec::new())),
        (_, true, true) => Err(Failure::bad_args(
            "`--prefix` and `--from-key` cannot be set at the same time, choose one",
        )),
        _ => Err(Failure::bad_args(
            "too many arguments, only accept one argument when `--prefix` or `--from-key` is set",
        )),
    }
}

/// Refuses `table`, which etcdctl has only for endpoints and members.
fn no_table(format: Format) -> CommandResult {
    match format {
        Format::Table => Err(Failure::unsupported(format)),
        _ => Ok(()),
    }
}

pub(crate) async fn put(
    client: &Client,
    timeout: Duration,
    format: Format,
    args: PutArgs,
) -> CommandResult {
    no_table(format)?;
    // As etcdctl: with --ignore-value, the key alone; otherwise a value,
    // given or read from stdin, and an empty stdin is no value (so that
    // `put k --ignore-lease` never erases a value by accident).
    let value = match (args.value, args.ignore_value) {
        (Some(_), true) => {
            return Err(Failure::bad_args(
                "put command needs only 1 argument when 'ignore-value' is set",
            ))
        }
        (None, true) => Vec::new(),
        (Some(value), false) => value.into_bytes(),
        (None, false) => {
            let mut value = Vec::new();
            std::io::stdin()
                .read_to_end(&mut value)
                .map_err(|e| format!("reading the value from stdin: {e}"))?;
            if value.is_empty() {
                return Err(Failure::bad_args(
                    "put command needs 1 argument and input from stdin or 2 arguments",
                ));
            }
            value
        }
    };
    let lease = match args.lease.as_deref() {
        Some(id) => parse_lease(id).map_err(|failure| {
            Failure::bad_args(failure.message.replace("bad lease ID arg", "bad lease ID"))
        })?,
        None => 0,
    };
    let request = PutRequest {
        key: args.key.into_bytes(),
        value,
        lease,
        prev_kv: args.prev_kv,
        ignore_value: args.ignore_value,
        ignore_lease: args.ignore_lease,
    };
    let (revision, answer) = timed(timeout, client.put_with(request)).await?;
    match format {
        Format::Simple | Format::Table => {
            println!("OK");
            if let Some(prev) = &answer.prev_kv {
                output::print_kv(prev, false);
            }
        }
        Format::Json => {
            let mut value = json!({ "header": output::header(revision) });
            if let Some(prev) = &answer.prev_kv {
                value["prev_kv"] = output::kv_json(prev);
            }
            output::print_json(&value);
        }
        Format::Fields => {
            fields_header(0, revision);
            if let Some(prev) = &answer.prev_kv {
                fields_kv("Prev", prev);
            }
        }
    }
    Ok(())
}

pub(crate) async fn get(
    client: &Client,
    timeout: Duration,
    format: Format,
    args: GetArgs,
) -> CommandResult {
    no_table(format)?;
    let (key, range_end) = key_range(args.range)?;
    let sort_target = match args.sort_by {
        None | Some(SortBy::Key) => SortTarget::Key,
        Some(SortBy::Version) => SortTarget::Version,
        Some(SortBy::Create) => SortTarget::Create,
        Some(SortBy::Modify) => SortTarget::Mod,
        Some(SortBy::Value) => SortTarget::Value,
    };
    let sort_order = match (args.order, args.sort_by) {
        (Some(Order::Descend), _) => SortOrder::Descend,
        (Some(Order::Ascend), _) | (None, Some(_)) => SortOrder::Ascend,
        (None, None) => SortOrder::None,
    };
    let request = RangeRequest {
        key,
        range_end,
        limit: args.limit,
        revision: args.rev,
        sort_order,
        sort_target,
        keys_only: args.keys_only,
        count_only: args.count_only,
        serializable: args.consistency == Consistency::S,
        ..RangeRequest::default()
    };
    let (revision, answer) = timed(timeout, client.range(request)).await?;
    match format {
        Format::Simple | Format::Table if args.count_only => println!("{}", answer.count),
        Format::Simple | Format::Table => {
            for kv in &answer.kvs {
                output::print_kv(kv, args.print_value_only);
            }
        }
        Format::Json => output::print_json(&range_json(revision, &answer)),
        Format::Fields => range_fields(revision, &answer),
    }
    Ok(())
}

/// A range answer as etcdctl's JSON (fields that are zero left out).
pub(crate) fn range_json(
    revision: u64,
    answer: &keel_client::proto::RangeResponse,
) -> serde_json::Value {
    let kvs: Vec<_> = answer.kvs.iter().map(output::kv_json).collect();
    let mut value = json!({ "header": output::header(revision) });
    if !kvs.is_empty() {
        value["kvs"] = json!(kvs);
    }
    if answer.more {
        value["more"] = json!(true);
    }
    if answer.count != 0 {
        value["count"] = json!(answer.count);
    }
    value
}

/// A range answer as etcdctl's fields.
pub(crate) fn range_fields(revision: u64, answer: &keel_client::proto::RangeResponse) {
    fields_header(0, revision);
    for kv in &answer.kvs {
        fields_kv("", kv);
    }
    println!("\"More\" : {}", answer.more);
    println!("\"Count\" : {}", answer.count);
}

/// A delete's answer as etcdctl's JSON.
pub(crate) fn delete_json(
    revision: u64,
    answer: &keel_client::proto::DeleteRangeResponse,
) -> serde_json::Value {
    let prev: Vec<_> = answer.prev_kvs.iter().map(output::kv_json).collect();
    let mut value = json!({ "header": output::header(revision) });
    if answer.deleted != 0 {
        value["deleted"] = json!(answer.deleted);
    }
    if !prev.is_empty() {
        value["prev_kvs"] = json!(prev);
    }
    value
}

/// A delete's answer as etcdctl's fields.
pub(crate) fn delete_fields(revision: u64, answer: &keel_client::proto::DeleteRangeResponse) {
    fields_header(0, revision);
    println!("\"Deleted\" : {}", answer.deleted);
    for kv in &answer.prev_kvs {
        fields_kv("Prev", kv);
    }
}

pub(crate) async fn del(
    client: &Client,
    timeout: Duration,
    format: Format,
    args: DelArgs,
) -> CommandResult {
    no_table(format)?;
    let (key, range_end) = key_range(args.range)?;
    let request = DeleteRangeRequest {
        key,
        range_end,
        prev_kv: args.prev_kv,
    };
    let (revision, answer) = timed(timeout, client.delete_range(request)).await?;
    match format {
        Format::Simple | Format::Table => {
            println!("{}", answer.deleted);
            for kv in &answer.prev_kvs {
                output::print_kv(kv, false);
            }
        }
        Format::Json => output::print_json(&delete_json(revision, &answer)),
        Format::Fields => delete_fields(revision, &answer),
    }
    Ok(())
}

/// Prints each event as etcdctl does. Ctrl-C ends it with status 130; a
/// watch the server cancels (its history compacted) with 5, as etcdctl's.
pub(crate) async fn watch(client: &Client, format: Format, args: WatchArgs) -> CommandResult {
    no_table(format)?;
    let (key, range_end) = key_range(args.range)?;
    let request = WatchCreate {
        key,
        range_end,
        start_revision: args.rev,
        prev_kv: args.prev_kv,
        progress_notify: args.progress_notify,
        ..WatchCreate::default()
    };
    let cancelled = |error: keel_client::Error| match error {
        keel_client::Error::Server { .. } | keel_client::Error::Compacted { .. } => {
            eprintln!("watch was canceled ({})", describe(error));
            Failure::new(Failure::INTERRUPTED, "watch is canceled by the server")
        }
        error => Failure::from(describe(error)),
    };
    let mut sigint = crate::cli::sigint_stream()?;
    let mut watcher = client.watch(request).await.map_err(cancelled)?;
    let mut seen = 0;
    loop {
        let batch = tokio::select! {
            batch = watcher.next() => batch.map_err(cancelled)?,
            _ = sigint.recv() => return Err(Failure::sigint()),
        };
        if batch.events.is_empty() && format == Format::Simple {
            println!("progress notify: revision {}", batch.revision);
        }
        for event in &batch.events {
            output::event(format, batch.revision, event);
            seen += 1;
            if args.count > 0 && seen >= args.count {
                return Ok(());
            }
        }
    }
}
