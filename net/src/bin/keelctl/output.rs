//! Printing answers as etcdctl prints them: `simple` text; `json` with
//! keys and values in base64 (so that any bytes survive) and fields that
//! are zero left out, as Go's encoding of etcd's messages leaves them out;
//! `fields` and `table` (`etcd_format.rs`).

use std::time::Duration;

use clap::ValueEnum;
use keel_client::proto::{AlarmMember, AlarmType, KeyValue, MemberInfo, Status};
use keel_client::{Event, EventKind};
use serde_json::{json, Value};

use crate::cli::{CommandResult, Failure};
use crate::etcd_format::{fields_header, fields_kv, go_quote, humanize_bytes, table};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    Simple,
    Json,
    /// etcdctl's table: for endpoint status and health, and member list.
    Table,
    /// etcdctl's `"Name" : value` lines.
    Fields,
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

/// A pair as etcdctl prints it: the key, then the value (an empty line
/// for a read with keys only).
pub(crate) fn print_kv(kv: &KeyValue, value_only: bool) {
    if !value_only {
        println!("{}", text(&kv.key));
    }
    println!("{}", text(&kv.value));
}

/// One event of a watch answer at `revision`.
pub(crate) fn event(format: Format, revision: u64, event: &Event) {
    match format {
        Format::Fields => {
            fields_header(0, revision);
            let kind = match event.kind {
                EventKind::Put => "PUT",
                EventKind::Delete => "DELETE",
            };
            println!("\"Type\" : {kind}");
            if let Some(prev) = &event.prev_kv {
                fields_kv("Prev", prev);
            }
            fields_kv("", &event.kv);
        }
        Format::Simple | Format::Table => {
            let kind = match event.kind {
                EventKind::Put => "PUT",
                EventKind::Delete => "DELETE",
            };
            // As etcdctl: the kind, the previous pair if asked for, then
            // the key and its value (empty for a delete).
            println!("{kind}");
            if let Some(prev) = &event.prev_kv {
                print_kv(prev, false);
            }
            print_kv(&event.kv, false);
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

/// etcdctl prints the compaction's line whatever the output format.
pub(crate) fn compacted(_format: Format, revision: u64, _at: u64) -> CommandResult {
    println!("compacted revision {revision}");
    Ok(())
}

/// What `endpoint status` shows of a keel node in etcdctl's columns: its
/// shards' highest Raft term and their Raft and applied indexes summed
/// (every shard is a Raft group of its own), whether it leads every shard,
/// and one error per stopped shard or alarm.
struct StatusColumns {
    db_size: u64,
    raft_term: u64,
    raft_index: u64,
    applied_index: u64,
    leads_all: bool,
    errors: Vec<String>,
}

impl StatusColumns {
    fn of(status: &Status) -> StatusColumns {
        StatusColumns {
            db_size: status.shard_info.iter().map(|s| s.db_size).sum(),
            raft_term: status
                .shard_info
                .iter()
                .map(|s| s.raft_term)
                .max()
                .unwrap_or(0),
            raft_index: status.shard_info.iter().map(|s| s.raft_index).sum(),
            applied_index: status.shard_info.iter().map(|s| s.applied_index).sum(),
            leads_all: status
                .shard_info
                .iter()
                .all(|s| s.leader == status.member_id),
            errors: status
                .shard_info
                .iter()
                .filter(|s| !s.stopped.is_empty())
                .map(|s| format!("shard {} stopped: {}", s.shard, s.stopped))
                .chain(
                    status
                        .alarms
                        .iter()
                        .map(|a| format!("alarm:{}", alarm_name(a.alarm))),
                )
                .collect(),
        }
    }

    /// etcdctl's columns: endpoint, ID, version, db size, is leader, is
    /// learner, raft term, raft index, raft applied index, errors.
    fn row(&self, endpoint: &str, status: &Status) -> Vec<String> {
        vec![
            endpoint.to_string(),
            format!("{:x}", status.member_id),
            status.version.clone(),
            humanize_bytes(self.db_size),
            self.leads_all.to_string(),
            is_learner(status).to_string(),
            self.raft_term.to_string(),
            self.raft_index.to_string(),
            self.applied_index.to_string(),
            self.errors.join(", "),
        ]
    }
}

/// The member id of the leader etcdctl's `leader` field names: this member
/// when it leads every shard, else the leader of shard 0 (each shard has
/// its own; `-w json` and `--cluster` show them all).
/// Whether the endpoint is a learner: its shards have it as one.
fn is_learner(status: &Status) -> bool {
    status
        .shard_info
        .iter()
        .any(|s| s.learners.contains(&status.member_id))
}

fn leader_of_all(status: &Status) -> u64 {
    status
        .shard_info
        .first()
        .map_or(status.member_id, |s| s.leader)
}

/// `endpoint status --cluster`: one row per member and shard, with how far
/// each member's replica of the shard is (a member that did not answer has
/// one row saying so).
/// A shard's voters (and learners) for the table: their count, since the
/// ids are in `member list`.
fn voters_cell(voters: &[u64], learners: &[u64]) -> String {
    match learners.len() {
        0 => voters.len().to_string(),
        n => format!(
            "{} + {n} learner{}",
            voters.len(),
            if n == 1 { "" } else { "s" }
        ),
    }
}

/// A shard's leadership placement for the table: pinned, avoided, or
/// empty for the spread.
fn placement_cell(pinned: u64, avoided: &[u64]) -> String {
    let mut parts = Vec::new();
    if pinned != 0 {
        parts.push(format!("pinned to {pinned:x}"));
    }
    if !avoided.is_empty() {
        let ids: Vec<String> = avoided.iter().map(|id| format!("{id:x}")).collect();
        parts.push(format!("avoids {}", ids.join(",")));
    }
    parts.join("; ")
}

pub(crate) fn cluster_status(format: Format, members: &[(String, Option<Status>)]) {
    let mut rows = Vec::new();
    let mut json_members = Vec::new();
    for (endpoint, status) in members {
        let Some(status) = status else {
            rows.push(vec![
                endpoint.clone(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                String::new(),
                "no answer".to_string(),
            ]);
            json_members.push(json!({ "Endpoint": endpoint, "Error": "no answer" }));
            continue;
        };
        let mut shards = Vec::new();
        for shard in &status.shard_info {
            rows.push(vec![
                endpoint.clone(),
                format!("{:x}", status.member_id),
                shard.shard.to_string(),
                format!("{:x}", shard.leader),
                shard.raft_term.to_string(),
                shard.raft_index.to_string(),
                shard.commit_index.to_string(),
                shard.applied_index.to_string(),
                voters_cell(&shard.voters, &shard.learners),
                placement_cell(shard.pinned_leader, &shard.avoided),
                shard.stopped.clone(),
            ]);
            shards.push(json!({
                "shard": shard.shard, "leader": shard.leader, "raft_term": shard.raft_term,
                "raft_index": shard.raft_index, "commit_index": shard.commit_index,
                "applied_index": shard.applied_index, "stopped": shard.stopped,
                "voters": shard.voters, "learners": shard.learners,
                "pinned_leader": shard.pinned_leader, "avoided": shard.avoided,
            }));
        }
        json_members.push(json!({
            "Endpoint": endpoint, "member_id": status.member_id, "name": status.name,
            "shards": shards,
        }));
    }
    match format {
        Format::Json => print_json(&Value::Array(json_members)),
        Format::Table => print!(
            "{}",
            table(
                &[
                    "endpoint",
                    "ID",
                    "shard",
                    "leader",
                    "raft term",
                    "raft index",
                    "commit index",
                    "applied index",
                    "voters",
                    "placement",
                    "errors",
                ],
                &rows,
            )
        ),
        Format::Simple | Format::Fields => {
            for row in rows {
                println!("{}", row.join(", "));
            }
        }
    }
}

/// `endpoint status`: etcdctl's columns; `-w json` adds keel's shards.
pub(crate) fn status(format: Format, endpoints: &str, status: &Status) {
    let columns = StatusColumns::of(status);
    let db_size = columns.db_size;
    match format {
        Format::Simple => println!("{}", columns.row(endpoints, status).join(", ")),
        Format::Table => print!(
            "{}",
            table(
                &[
                    "endpoint",
                    "ID",
                    "version",
                    "db size",
                    "is leader",
                    "is learner",
                    "raft term",
                    "raft index",
                    "raft applied index",
                    "errors",
                ],
                &[columns.row(endpoints, status)],
            )
        ),
        Format::Fields => {
            fields_header(status.member_id, 0);
            println!("\"Version\" : {}", go_quote(status.version.as_bytes()));
            println!("\"DBSize\" : {db_size}");
            println!("\"Leader\" : {}", leader_of_all(status));
            println!("\"IsLearner\" : {}", is_learner(status));
            println!("\"RaftIndex\" : {}", columns.raft_index);
            println!("\"RaftTerm\" : {}", columns.raft_term);
            println!("\"RaftAppliedIndex\" : {}", columns.applied_index);
            println!("\"Errors\" : [{}]", columns.errors.join(" "));
            println!("\"Endpoint\" : {}", go_quote(endpoints.as_bytes()));
            println!();
        }
        Format::Json => {
            let shards: Vec<Value> = status
                .shard_info
                .iter()
                .map(|s| {
                    let mut shard = json!({
                        "shard": s.shard, "core": s.core, "leader": s.leader,
                        "raft_term": s.raft_term, "raft_index": s.raft_index,
                        "commit_index": s.commit_index, "applied_index": s.applied_index,
                        "db_size": s.db_size,
                    });
                    if !s.stopped.is_empty() {
                        shard["stopped"] = json!(s.stopped);
                    }
                    shard
                })
                .collect();
            // etcdctl's shape, with keel's shards beside it.
            let mut answer = json!({
                "header": { "member_id": status.member_id },
                "version": status.version,
                "dbSize": db_size,
                "leader": leader_of_all(status),
                "raftIndex": columns.raft_index,
                "raftTerm": columns.raft_term,
                "raftAppliedIndex": columns.applied_index,
                "dbSizeInUse": db_size,
            });
            if !columns.errors.is_empty() {
                answer["errors"] = json!(columns.errors);
            }
            print_json(&json!([{
                "Endpoint": endpoints,
                "Status": answer,
                "Keel": {
                    "shards": status.shards,
                    "cores": status.cores,
                    "core_ports": status.core_ports,
                    "shard_info": shards,
                },
            }]));
        }
    }
}

/// An alarm as etcdctl names it.
fn alarm_name(alarm: AlarmType) -> &'static str {
    match alarm {
        AlarmType::None => "NONE",
        AlarmType::NoSpace => "NOSPACE",
        AlarmType::Corrupt => "CORRUPT",
    }
}

/// Whether the endpoint answered, and how fast: etcdctl writes the simple
/// form on stderr.
pub(crate) fn health(format: Format, endpoint: &str, took: Duration) {
    let took = format!("{took:?}");
    match format {
        Format::Simple => {
            eprintln!("{endpoint} is healthy: successfully committed proposal: took = {took}")
        }
        Format::Json => print_json(&json!([
            { "endpoint": endpoint, "health": true, "took": took }
        ])),
        Format::Table => print!(
            "{}",
            table(
                &["endpoint", "health", "took", "error"],
                &[vec![
                    endpoint.to_string(),
                    "true".into(),
                    took,
                    String::new()
                ]],
            )
        ),
        Format::Fields => {
            println!("\"Endpoint\" : {}", go_quote(endpoint.as_bytes()));
            println!("\"Health\" : true");
            println!("\"Took\" : {took}");
            println!("\"Error\" : ");
            println!();
        }
    }
}

/// Alarms as etcdctl prints them: `memberID:<decimal id> alarm:NOSPACE`.
pub(crate) fn alarms(format: Format, alarms: &[AlarmMember]) -> CommandResult {
    match format {
        Format::Table => return Err(Failure::unsupported(format)),
        Format::Fields => {
            fields_header(0, 0);
            for alarm in alarms {
                println!("\"MemberID\" : {}", alarm.member_id);
                println!("\"AlarmType\" : {}", alarm_name(alarm.alarm));
                println!();
            }
        }
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
                        AlarmType::Corrupt => 2,
                    };
                    json!({ "memberID": a.member_id, "alarm": code })
                })
                .collect();
            // As etcd's: no alarms, no field.
            if alarms.is_empty() {
                print_json(&json!({}));
            } else {
                print_json(&json!({ "alarms": alarms }));
            }
        }
    }
    Ok(())
}

/// `member list` (and the members after a change), as etcdctl prints
/// them: `member_id` is the answering member.
pub(crate) fn members(format: Format, cluster_id: u64, member_id: u64, members: &[MemberInfo]) {
    let url = |address: &str| {
        if address.is_empty() {
            String::new()
        } else {
            format!("http://{address}")
        }
    };
    let status = |m: &MemberInfo| if m.started { "started" } else { "unstarted" };
    match format {
        Format::Simple => {
            for m in members {
                println!(
                    "{:x}, {}, {}, {}, {}, {}",
                    m.id,
                    status(m),
                    m.name,
                    url(&m.peer_address),
                    url(&m.client_address),
                    m.learner
                );
            }
        }
        Format::Json => print_json(&json!({
            "header": { "cluster_id": cluster_id, "member_id": member_id },
            "members": members.iter().map(|m| {
                let mut member = json!({
                    "ID": m.id,
                    "name": m.name,
                    "peerURLs": [url(&m.peer_address)],
                });
                if !m.client_address.is_empty() {
                    member["clientURLs"] = json!([url(&m.client_address)]);
                }
                if m.learner {
                    member["isLearner"] = json!(true);
                }
                member
            }).collect::<Vec<_>>(),
        })),
        Format::Table => print!(
            "{}",
            table(
                &[
                    "ID",
                    "Status",
                    "Name",
                    "Peer Addrs",
                    "Client Addrs",
                    "Is Learner",
                ],
                &members
                    .iter()
                    .map(|m| {
                        vec![
                            format!("{:x}", m.id),
                            status(m).into(),
                            m.name.clone(),
                            url(&m.peer_address),
                            url(&m.client_address),
                            m.learner.to_string(),
                        ]
                    })
                    .collect::<Vec<_>>(),
            )
        ),
        Format::Fields => {
            fields_header(member_id, 0);
            for m in members {
                println!("\"ID\" : {}", m.id);
                println!("\"Name\" : {}", go_quote(m.name.as_bytes()));
                println!(
                    "\"PeerURL\" : {}",
                    go_quote(url(&m.peer_address).as_bytes())
                );
                if !m.client_address.is_empty() {
                    println!(
                        "\"ClientURL\" : {}",
                        go_quote(url(&m.client_address).as_bytes())
                    );
                }
                println!("\"IsLearner\" : {}", m.learner);
                println!();
            }
        }
    }
}

/// What `member add` prints: the new member and how to start it.
pub(crate) fn member_added(
    cluster_id: u64,
    id: u64,
    name: &str,
    peer: &str,
    members: &[MemberInfo],
) {
    println!("Member {id:x} added to cluster {cluster_id:x}");
    let initial: Vec<String> = members
        .iter()
        .map(|m| format!("{}=http://{}", m.name, m.peer_address))
        .collect();
    let initial = initial.join(",");
    println!();
    println!("KEEL_NAME=\"{name}\"");
    println!("KEEL_INITIAL_CLUSTER=\"{initial}\"");
    println!("KEEL_INITIAL_ADVERTISE_PEER_URLS=\"http://{peer}\"");
    println!("KEEL_INITIAL_CLUSTER_STATE=\"existing\"");
    println!();
    println!(
        "Start it on an empty data directory with:\n  keel --name {name} --initial-cluster {initial} \
         --initial-cluster-state existing --listen-peer {peer}"
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_shards_voters_and_placement_read_as_words() {
        assert_eq!(voters_cell(&[1, 2, 3], &[]), "3");
        assert_eq!(voters_cell(&[1, 2, 3], &[4]), "3 + 1 learner");
        assert_eq!(voters_cell(&[1, 2, 3], &[4, 5]), "3 + 2 learners");
        assert_eq!(placement_cell(0, &[]), "");
        assert_eq!(placement_cell(0xab, &[]), "pinned to ab");
        assert_eq!(
            placement_cell(0xab, &[1, 0x1f]),
            "pinned to ab; avoids 1,1f"
        );
        assert_eq!(placement_cell(0, &[2]), "avoids 2");
    }
}
