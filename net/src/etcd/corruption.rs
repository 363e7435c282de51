//! The periodic corruption check (docs/corruption.md): every
//! `corrupt_check_interval`, for each shard this member leads, every
//! member's hash of the shard at one revision is compared
//! (`NodeClient::compare_shard`), and each member whose copy differs from
//! most members' gets a CORRUPT alarm on the shard, which then refuses
//! writes. Only the shard's leader checks it, so a shard is checked once
//! per interval, not once per member.

use std::time::Duration;

use keel_engine::shard::ShardCheck;

use crate::etcd::cores::{client, Cores};

/// Checks every shard this member leads, every `interval`; never when
/// `interval` is zero.
pub(crate) async fn check_periodically(cores: Cores, interval: Duration) {
    if interval.is_zero() {
        return;
    }
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is at once: the first check waits a whole interval.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        for shard in 0..cores.shard_count() {
            match check_if_led(&cores, shard).await {
                Ok(Some(check)) => report(&check),
                Ok(None) => {}
                Err(status) => tracing::warn!(
                    shard,
                    error = %status.message(),
                    "the corruption check of a shard could not run"
                ),
            }
        }
    }
}

/// Checks `shard` if this member leads it, raising a CORRUPT alarm for
/// every member whose copy differs.
async fn check_if_led(cores: &Cores, shard: usize) -> Result<Option<ShardCheck>, tonic::Status> {
    cores
        .call_for_shard(shard, move |node, core| {
            Box::pin(async move {
                let client = client(&node, core);
                // A member alone has nobody to compare with: its shards
                // are not read for nothing.
                if client.cluster().members.len() < 2 {
                    return Ok(None);
                }
                let status = client.status().await?;
                let leads = status
                    .get(shard)
                    .is_some_and(|s| s.leader == client.member_id());
                if !leads {
                    return Ok(None);
                }
                let check = client.compare_shard(shard).await?;
                for member in &check.differing {
                    client.raise_corrupt(shard, *member).await?;
                }
                Ok(Some(check))
            })
        })
        .await
}

fn report(check: &ShardCheck) {
    let hashes: Vec<String> = check
        .hashes
        .iter()
        .map(|(member, hash)| match hash {
            Ok(hash) => format!("{member:x}={hash}"),
            Err(error) => format!("{member:x}=({error})"),
        })
        .collect();
    if check.differing.is_empty() {
        tracing::debug!(
            shard = check.shard,
            revision = check.revision,
            hashes = %hashes.join(" "),
            "corruption check: the members agree"
        );
    } else {
        let differing: Vec<String> = check.differing.iter().map(|m| format!("{m:x}")).collect();
        tracing::error!(
            shard = check.shard,
            revision = check.revision,
            hashes = %hashes.join(" "),
            differing = %differing.join(" "),
            "corruption check: members' copies of the shard differ; CORRUPT alarm raised, \
             the shard refuses writes"
        );
    }
}
