//! Comparing configurations.

use crate::eraftpb::ConfState;

/// Whether two configurations have the same members in each role, whatever
/// the order the ids are listed in.
#[must_use]
pub fn conf_state_eq(lhs: &ConfState, rhs: &ConfState) -> bool {
    lhs.auto_leave == rhs.auto_leave
        && same_ids(lhs.get_voters(), rhs.get_voters())
        && same_ids(lhs.get_learners(), rhs.get_learners())
        && same_ids(lhs.get_voters_outgoing(), rhs.get_voters_outgoing())
        && same_ids(lhs.get_learners_next(), rhs.get_learners_next())
}

/// Set equality. The lists are a cluster's members (a handful), and are
/// usually in the same order, so the quadratic check only runs when they are
/// not.
fn same_ids(lhs: &[u64], rhs: &[u64]) -> bool {
    lhs == rhs || (lhs.iter().all(|id| rhs.contains(id)) && rhs.iter().all(|id| lhs.contains(id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(voters: &[u64], learners: &[u64]) -> ConfState {
        ConfState::from((voters.to_vec(), learners.to_vec()))
    }

    #[test]
    fn order_does_not_matter_but_roles_do() {
        assert!(conf_state_eq(
            &state(&[1, 2, 3], &[4]),
            &state(&[3, 1, 2], &[4])
        ));
        assert!(!conf_state_eq(
            &state(&[1, 2, 3], &[4]),
            &state(&[1, 2, 4], &[3])
        ));
        assert!(!conf_state_eq(
            &state(&[1, 2], &[]),
            &state(&[1, 2, 3], &[])
        ));
        assert!(!conf_state_eq(
            &state(&[1, 2, 3], &[]),
            &state(&[1, 2], &[])
        ));
    }

    #[test]
    fn every_list_is_compared_as_a_set() {
        let mut lhs = state(&[1, 2, 3], &[4, 5]);
        lhs.set_voters_outgoing(vec![1, 2, 6]);
        lhs.set_learners_next(vec![7, 8]);
        let mut rhs = state(&[3, 2, 1], &[5, 4]);
        rhs.set_voters_outgoing(vec![6, 1, 2]);
        rhs.set_learners_next(vec![8, 7]);
        assert!(conf_state_eq(&lhs, &rhs));
        // Repeats do not change a set.
        assert!(conf_state_eq(
            &state(&[1, 1, 2], &[]),
            &state(&[1, 2, 2], &[])
        ));
        rhs.set_learners_next(vec![8, 9]);
        assert!(!conf_state_eq(&lhs, &rhs));
    }

    #[test]
    fn joint_halves_and_auto_leave_count() {
        let mut joint = state(&[1, 2, 3], &[]);
        joint.set_voters_outgoing(vec![1, 2]);
        assert!(!conf_state_eq(&joint, &state(&[1, 2, 3], &[])));
        let mut auto = joint.clone();
        auto.auto_leave = true;
        assert!(!conf_state_eq(&joint, &auto));
        let mut next = joint.clone();
        next.set_learners_next(vec![2]);
        assert!(!conf_state_eq(&joint, &next));
    }
}
