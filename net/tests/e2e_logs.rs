//! `--log-format json`: every line on stderr is one JSON object, and every
//! Raft event (raft-rs' own, target `raft`, and keel's in a shard) names
//! its shard, member and term.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn json_logs_name_the_shard_member_and_term_of_every_raft_event() {
    let dir = tempfile::tempdir().unwrap();
    let mut keel = Command::new(env!("CARGO_BIN_EXE_keel"))
        .arg("--data-dir")
        .arg(dir.path())
        .args(["--listen-client", "127.0.0.1:0", "--core-port-base", "0"])
        .args(["--shards", "2", "--cores", "2", "--no-pin"])
        .args(["--log-format", "json"])
        .env("KEEL_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start keel");
    let stderr = BufReader::new(keel.stderr.take().expect("stderr"));
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut leaders = std::collections::BTreeSet::new();
    let mut raft_events = 0;
    let mut member = None;
    for line in stderr.lines() {
        let line = line.expect("a line");
        let event: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("not one JSON object ({e}): {line}"));
        assert!(
            event["timestamp"].is_string() && event["level"].is_string(),
            "{line}"
        );
        if event["target"] == "raft" {
            raft_events += 1;
            let span = &event["span"];
            assert_eq!(span["name"], "shard", "{line}");
            assert!(span["shard"].is_u64(), "no shard: {line}");
            assert!(span["term"].is_u64(), "no term: {line}");
            let this_member = span["member"].as_str().expect("member").to_string();
            assert_eq!(member.get_or_insert(this_member.clone()), &this_member);
            let message = event["fields"]["message"].as_str().unwrap_or_default();
            if message.starts_with("became leader") {
                leaders.insert(span["shard"].as_u64().unwrap());
            }
        }
        if leaders.len() == 2 || Instant::now() > deadline {
            break;
        }
    }
    let _ = keel.kill();
    let _ = keel.wait();
    assert_eq!(leaders.len(), 2, "both shards' elections were logged");
    assert!(raft_events >= 4, "{raft_events}");
}
