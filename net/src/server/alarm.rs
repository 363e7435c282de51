//! `Alarm`: etcd's `Maintenance.Alarm` over the node's alarms (docs/node.md,
//! "NOSPACE"): list them, raise one, clear one.

use keel_engine::mvcc::{AlarmAction as Action, AlarmKind};
use keel_engine::shard::{Alarm, NodeClient, NodeError};
use keel_proto::{AlarmAction, AlarmMember, AlarmType, ResponseBody};

/// The protocol's view of alarms.
pub(crate) fn members(alarms: Vec<Alarm>) -> Vec<AlarmMember> {
    alarms
        .into_iter()
        .map(|alarm| AlarmMember {
            member_id: alarm.member,
            alarm: match alarm.kind {
                AlarmKind::NoSpace => AlarmType::NoSpace,
                AlarmKind::Corrupt => AlarmType::Corrupt,
            },
        })
        .collect()
}

/// Serves an alarm request; answers the alarms it covered: every one for
/// `Get`, the one raised or cleared otherwise (none when clearing one that
/// was not raised, as etcd).
pub(crate) async fn alarm(
    client: &NodeClient<'_>,
    action: AlarmAction,
    member_id: u64,
    alarm: AlarmType,
) -> Result<(u64, ResponseBody), NodeError> {
    let raised = client.alarms().await?;
    if action == AlarmAction::Get {
        return Ok((0, ResponseBody::Alarm(members(raised))));
    }
    let kind = match alarm {
        AlarmType::NoSpace => AlarmKind::NoSpace,
        AlarmType::Corrupt => AlarmKind::Corrupt,
        AlarmType::None => {
            return Err(NodeError::InvalidRequest(
                "an alarm to raise or clear must be named".to_string(),
            ))
        }
    };
    let target = Alarm {
        member: member_id,
        kind,
    };
    let (action, covered) = match action {
        AlarmAction::Activate => (Action::Activate, vec![target]),
        _ => (
            Action::Deactivate,
            raised.into_iter().filter(|a| *a == target).collect(),
        ),
    };
    client.set_alarm(action, target).await?;
    Ok((0, ResponseBody::Alarm(members(covered))))
}
