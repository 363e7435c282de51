//! Configuration changes: the two message forms raft accepts, and a short
//! text form for tests and logs.

use std::borrow::Cow;

use crate::eraftpb::{
    ConfChange, ConfChangeSingle, ConfChangeTransition, ConfChangeType, ConfChangeV2,
};

/// One change to one member.
pub fn new_conf_change_single(node_id: u64, ty: ConfChangeType) -> ConfChangeSingle {
    let mut single = ConfChangeSingle {
        node_id,
        ..Default::default()
    };
    single.set_change_type(ty);
    single
}

/// Reads changes written as space-separated words: `v<id>` makes a voter,
/// `l<id>` a learner, `r<id>` removes the member. An empty text is no change.
pub fn parse_conf_change(text: &str) -> Result<Vec<ConfChangeSingle>, String> {
    text.trim()
        .split_ascii_whitespace()
        .map(|word| {
            let mut chars = word.chars();
            let ty = match chars.next() {
                Some('v') => ConfChangeType::AddNode,
                Some('l') => ConfChangeType::AddLearnerNode,
                Some('r') => ConfChangeType::RemoveNode,
                _ => {
                    return Err(format!(
                        "unknown change {word:?}: expected v<id>, l<id> or r<id>"
                    ))
                }
            };
            let id = chars
                .as_str()
                .parse()
                .map_err(|e| format!("bad member id in {word:?}: {e}"))?;
            Ok(new_conf_change_single(id, ty))
        })
        .collect()
}

/// Writes changes in the form [`parse_conf_change`] reads.
pub fn stringify_conf_change(changes: &[ConfChangeSingle]) -> String {
    let words: Vec<String> = changes
        .iter()
        .map(|change| {
            let letter = match change.get_change_type() {
                ConfChangeType::AddNode => 'v',
                ConfChangeType::AddLearnerNode => 'l',
                ConfChangeType::RemoveNode => 'r',
            };
            format!("{letter}{}", change.node_id)
        })
        .collect();
    words.join(" ")
}

/// Either form of configuration change: the one-member `ConfChange` and the
/// many-member `ConfChangeV2`. raft works on the second and keeps the first
/// for proposals that arrive in it.
pub trait ConfChangeI {
    /// The change as a `ConfChangeV2`, consuming it.
    fn into_v2(self) -> ConfChangeV2;

    /// The change as a `ConfChangeV2`, copied only if it was a `ConfChange`.
    fn as_v2(&self) -> Cow<'_, ConfChangeV2>;

    /// The change as a `ConfChange`, if it is one: a `ConfChangeV2` has no
    /// one-member form.
    fn as_v1(&self) -> Option<&ConfChange>;
}

impl ConfChangeI for ConfChange {
    fn into_v2(mut self) -> ConfChangeV2 {
        let mut v2 = ConfChangeV2::default();
        v2.mut_changes()
            .push(new_conf_change_single(self.node_id, self.get_change_type()));
        v2.set_context(self.take_context());
        v2
    }

    fn as_v2(&self) -> Cow<'_, ConfChangeV2> {
        Cow::Owned(self.clone().into_v2())
    }

    fn as_v1(&self) -> Option<&ConfChange> {
        Some(self)
    }
}

impl ConfChangeI for ConfChangeV2 {
    fn into_v2(self) -> ConfChangeV2 {
        self
    }

    fn as_v2(&self) -> Cow<'_, ConfChangeV2> {
        Cow::Borrowed(self)
    }

    fn as_v1(&self) -> Option<&ConfChange> {
        None
    }
}

impl ConfChangeV2 {
    /// Whether applying this change goes through a joint configuration, and
    /// if so whether raft leaves it by itself (`Some(true)`) or waits for an
    /// explicit empty change (`Some(false)`). `None`: a single change with
    /// the automatic transition is applied directly.
    ///
    /// Any change of more than one member goes joint, even where a direct
    /// change would be safe: which ones are safe depends on the current
    /// configuration, and joint consensus is always safe.
    pub fn enter_joint(&self) -> Option<bool> {
        let transition = self.get_transition();
        if transition == ConfChangeTransition::Auto && self.changes.len() <= 1 {
            return None;
        }
        Some(transition != ConfChangeTransition::Explicit)
    }

    /// Whether this is the empty change that leaves a joint configuration
    /// (only its context may be set).
    pub fn leave_joint(&self) -> bool {
        self.get_transition() == ConfChangeTransition::Auto && self.changes.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_form_round_trips_and_rejects_garbage() {
        let changes = parse_conf_change(" v1 l2  r3 ").unwrap();
        let kinds: Vec<_> = changes
            .iter()
            .map(|c| (c.get_change_type(), c.node_id))
            .collect();
        assert_eq!(
            kinds,
            [
                (ConfChangeType::AddNode, 1),
                (ConfChangeType::AddLearnerNode, 2),
                (ConfChangeType::RemoveNode, 3)
            ]
        );
        assert_eq!(stringify_conf_change(&changes), "v1 l2 r3");
        assert!(parse_conf_change("").unwrap().is_empty());
        for bad in ["x1", "v", "vx", "v-1", "u4"] {
            assert!(parse_conf_change(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn a_v1_change_becomes_one_v2_change_with_its_context() {
        let mut v1 = ConfChange {
            node_id: 7,
            ..Default::default()
        };
        v1.set_change_type(ConfChangeType::RemoveNode);
        v1.set_context(b"why".to_vec().into());
        let v2 = v1.as_v2().into_owned();
        assert_eq!(stringify_conf_change(v2.get_changes()), "r7");
        assert_eq!(v2.get_context(), b"why");
        assert!(v1.as_v1().is_some());
        assert!(v2.as_v1().is_none());
        assert!(matches!(v2.as_v2(), Cow::Borrowed(_)));
    }

    #[test]
    fn joint_consensus_is_entered_for_many_changes_or_when_asked() {
        let mut cc = ConfChangeV2::default();
        assert!(cc.leave_joint());
        assert_eq!(cc.enter_joint(), None);
        // Empty but with a transition asked for: enters, does not leave.
        for (transition, auto) in [
            (ConfChangeTransition::Explicit, false),
            (ConfChangeTransition::Implicit, true),
        ] {
            cc.set_transition(transition);
            assert!(!cc.leave_joint());
            assert_eq!(cc.enter_joint(), Some(auto));
        }
        cc.set_transition(ConfChangeTransition::Auto);
        cc.set_changes(parse_conf_change("v2").unwrap().into());
        assert!(!cc.leave_joint());
        assert_eq!(cc.enter_joint(), None);
        cc.set_transition(ConfChangeTransition::Explicit);
        assert_eq!(cc.enter_joint(), Some(false));
        cc.set_transition(ConfChangeTransition::Implicit);
        assert_eq!(cc.enter_joint(), Some(true));
        cc.set_transition(ConfChangeTransition::Auto);
        cc.set_changes(parse_conf_change("v2 v3").unwrap().into());
        assert_eq!(cc.enter_joint(), Some(true));
    }
}
