//! Printing answers: `simple` as etcdctl prints them, `json` with keys and
//! values in base64 (as etcdctl's JSON, so that any bytes survive).

use clap::ValueEnum;
use keel_client::proto::{AlarmMember, AlarmType, KeyValue, Status};
use keel_client::{Event, EventKind};
use serde_json::{json, Value};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Simple,
    Json,
}

/// Standard base64 with padding.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let symbol = |index: u32| char::from(ALPHABET[(index & 63) as usize]);
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk.first().copied().unwrap_or(0),
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        out.push(symbol(n >> 18));
        out.push(symbol(n >> 12));
        out.push(if chunk.len() > 1 { symbol(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { symbol(n) } else { '=' });
    }
    out
}

pub(crate) fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

pub(crate) fn kv_json(kv: &KeyValue) -> Value {
    let mut value = json!({
        "key": base64(&kv.key),
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
    });
    if kv.lease != 0 {
        value["lease"] = json!(kv.lease);
    }
    if !kv.value.is_empty() {
        value["value"] = json!(base64(&kv.value));
    }
    value
}

pub(crate) fn header(revision: u64) -> Value {
    json!({ "revision": revision })
}

pub(crate) fn print_json(value: &Value) {
    println!("{value}");
}

/// A pair as etcdctl prints it: the key, then the value.
pub(crate) fn print_kv(kv: &KeyValue, keys_only: bool, value_only: bool) {
    if !value_only {
        println!("{}", text(&kv.key));
    }
    if !keys_only {
        println!("{}", text(&kv.value));
    }
}

pub(crate) fn event(format: Format, revision: u64, event: &Event) {
    match format {
        Format::Simple => {
            let kind = match event.kind {
                EventKind::Put => "PUT",
                EventKind::Delete => "DELETE",
            };
            println!("{kind}");
            if let Some(prev) = &event.prev_kv {
                print_kv(prev, false, false);
            }
            println!("{}", text(&event.kv.key));
            if event.kind == EventKind::Put {
                println!("{}", text(&event.kv.value));
            }
        }
        Format::Json => {
            let mut value = json!({
                "header": header(revision),
                "type": match event.kind { EventKind::Put => "PUT", EventKind::Delete => "DELETE" },
                "kv": kv_json(&event.kv),
            });
            if let Some(prev) = &event.prev_kv {
                value["prev_kv"] = kv_json(prev);
            }
            print_json(&value);
        }
    }
}

pub(crate) fn compacted(format: Format, revision: u64, at: u64) {
    match format {
        Format::Simple => println!("compacted revision {revision}"),
        Format::Json => print_json(&json!({ "header": header(at), "compacted": revision })),
    }
}

pub(crate) fn status(format: Format, endpoints: &str, status: &Status) {
    let db_size: u64 = status.shard_info.iter().map(|s| s.db_size).sum();
    match format {
        Format::Simple => {
            let alarms: String = status
                .alarms
                .iter()
                .map(|a| format!(", alarm:{}", alarm_name(a.alarm)))
                .collect();
            println!(
                "{endpoints}, {:x}, {}, {} bytes, {} shards on {} cores{alarms}",
                status.member_id, status.version, db_size, status.shards, status.cores
            );
            println!("shard  core  port   leader  raft term  raft index  db size");
            for shard in &status.shard_info {
                let port = status
                    .core_ports
                    .get(shard.core as usize)
                    .copied()
                    .unwrap_or_default();
                if !shard.stopped.is_empty() {
                    println!(
                        "{:<6} {:<5} {:<6} stopped: {}",
                        shard.shard, shard.core, port, shard.stopped
                    );
                    continue;
                }
                println!(
                    "{:<6} {:<5} {:<6} {:<7} {:<10} {:<11} {}",
                    shard.shard,
                    shard.core,
                    port,
                    shard.leader,
                    shard.raft_term,
                    shard.raft_index,
                    shard.db_size
                );
            }
        }
        Format::Json => {
            let shards: Vec<Value> = status
                .shard_info
                .iter()
                .map(|s| {
                    let mut shard = json!({
                        "shard": s.shard, "core": s.core, "leader": s.leader,
                        "raft_term": s.raft_term, "raft_index": s.raft_index, "db_size": s.db_size,
                    });
                    if !s.stopped.is_empty() {
                        shard["stopped"] = json!(s.stopped);
                    }
                    shard
                })
                .collect();
            print_json(&json!({
                "endpoint": endpoints,
                "member_id": status.member_id,
                "version": status.version,
                "db_size": db_size,
                "shards": status.shards,
                "cores": status.cores,
                "core_ports": status.core_ports,
                "shard_info": shards,
                "alarms": status.alarms.iter().map(|a| alarm_name(a.alarm)).collect::<Vec<_>>(),
            }));
        }
    }
}

/// An alarm as etcdctl names it.
fn alarm_name(alarm: AlarmType) -> &'static str {
    match alarm {
        AlarmType::None => "NONE",
        AlarmType::NoSpace => "NOSPACE",
    }
}

/// Alarms as etcdctl prints them: `memberID:<decimal id> alarm:NOSPACE`.
pub(crate) fn alarms(format: Format, alarms: &[AlarmMember]) {
    match format {
        Format::Simple => {
            for alarm in alarms {
                println!(
                    "memberID:{} alarm:{}",
                    alarm.member_id,
                    alarm_name(alarm.alarm)
                );
            }
        }
        Format::Json => {
            let alarms: Vec<Value> = alarms
                .iter()
                .map(|a| {
                    let code = match a.alarm {
                        AlarmType::None => 0,
                        AlarmType::NoSpace => 1,
                    };
                    json!({ "memberID": a.member_id, "alarm": code })
                })
                .collect();
            print_json(&json!({ "alarms": alarms }));
        }
    }
}

pub(crate) fn members(format: Format, status: &Status) {
    match format {
        Format::Simple => println!(
            "{:x}, started, {}, , http://{}",
            status.member_id, status.name, status.client_address
        ),
        Format::Json => print_json(&json!({
            "members": [{
                "ID": status.member_id,
                "name": status.name,
                "clientURLs": [format!("http://{}", status.client_address)],
            }]
        })),
    }
}
