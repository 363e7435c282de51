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
    describe, parse_lease, timed, CommandResult, Consistency, DelArgs, GetArgs, Order, PutArgs,
    SortBy, WatchArgs,
};
use crate::output::{self, Format};

/// The key and range end a command's arguments ask for.
/// As etcdctl: `"" --prefix` and `"" --from-key` are every key (key and
/// end `"\0"`).
fn key_range(range: KeyRange) -> Result<(Vec<u8>, Vec<u8>), String> {
    let key = range.key.into_bytes();
    match (range.range_end, range.prefix, range.from_key) {
        (Some(end), false, false) => Ok((key, end.into_bytes())),
        (None, true, false) => Ok(prefix_range(&key)),
        (None, false, true) if key.is_empty() => Ok((vec![0], vec![0])),
        (None, false, true) => Ok((key, vec![0])),
        (None, false, false) => Ok((key, Vec::new())),
        _ => Err("give only one of a range end, --prefix and --from-key".to_string()),
    }
}

pub(crate) async fn put(
    client: &Client,
    timeout: Duration,
    format: Format,
    args: PutArgs,
) -> CommandResult {
    let value = match args.value {
        Some(value) => value.into_bytes(),
        None if args.ignore_value => Vec::new(),
        None => {
            let mut value = Vec::new();
            std::io::stdin()
                .read_to_end(&mut value)
                .map_err(|e| format!("reading the value from stdin: {e}"))?;
            value
        }
    };
    let lease = args
        .lease
        .as_deref()
        .map(parse_lease)
        .transpose()?
        .unwrap_or(0);
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
        Format::Simple => {
            println!("OK");
            if let Some(prev) = &answer.prev_kv {
                output::print_kv(prev, false, false);
            }
        }
        Format::Json => {
            let mut value = json!({ "header": output::header(revision) });
            if let Some(prev) = &answer.prev_kv {
                value["prev_kv"] = output::kv_json(prev);
            }
            output::print_json(&value);
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
        Format::Simple if args.count_only => println!("{}", answer.count),
        Format::Simple => {
            for kv in &answer.kvs {
                output::print_kv(kv, args.keys_only, args.print_value_only);
            }
        }
        Format::Json => {
            let kvs: Vec<_> = answer.kvs.iter().map(output::kv_json).collect();
            let mut value = json!({ "header": output::header(revision), "count": answer.count });
            if !kvs.is_empty() {
                value["kvs"] = json!(kvs);
            }
            if answer.more {
                value["more"] = json!(true);
            }
            output::print_json(&value);
        }
    }
    Ok(())
}

pub(crate) async fn del(
    client: &Client,
    timeout: Duration,
    format: Format,
    args: DelArgs,
) -> CommandResult {
    let (key, range_end) = key_range(args.range)?;
    let request = DeleteRangeRequest {
        key,
        range_end,
        prev_kv: args.prev_kv,
    };
    let (revision, answer) = timed(timeout, client.delete_range(request)).await?;
    match format {
        Format::Simple => {
            println!("{}", answer.deleted);
            for kv in &answer.prev_kvs {
                output::print_kv(kv, false, false);
            }
        }
        Format::Json => {
            let prev: Vec<_> = answer.prev_kvs.iter().map(output::kv_json).collect();
            let mut value =
                json!({ "header": output::header(revision), "deleted": answer.deleted });
            if !prev.is_empty() {
                value["prev_kvs"] = json!(prev);
            }
            output::print_json(&value);
        }
    }
    Ok(())
}

pub(crate) async fn watch(client: &Client, format: Format, args: WatchArgs) -> CommandResult {
    let (key, range_end) = key_range(args.range)?;
    let request = WatchCreate {
        key,
        range_end,
        start_revision: args.rev,
        prev_kv: args.prev_kv,
        progress_notify: args.progress_notify,
        ..WatchCreate::default()
    };
    let mut watcher = client.watch(request).await.map_err(describe)?;
    let mut seen = 0;
    loop {
        let batch = tokio::select! {
            batch = watcher.next() => batch.map_err(describe)?,
            _ = tokio::signal::ctrl_c() => return Ok(()),
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
