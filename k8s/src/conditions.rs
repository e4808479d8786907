//! Status conditions as the Kubernetes API conventions define them: one per type, the
//! transition time moves only when the status does.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// A condition's new value, without the bookkeeping fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConditionUpdate<'a> {
    /// Its type (`Ready`, `Valid`, `Conflict`).
    pub type_: &'a str,
    /// `True` or `False` (or `Unknown`).
    pub status: bool,
    /// One CamelCase word a program can switch on.
    pub reason: &'a str,
    /// What a person should know, and do.
    pub message: String,
}

/// Sets `update` in `conditions` for `generation`: keeps the last transition time when the
/// status is unchanged, so `kubectl` shows since when a link has been ready.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    update: ConditionUpdate<'_>,
    generation: Option<i64>,
) {
    let status = if update.status { "True" } else { "False" };
    let transition = conditions
        .iter()
        .find(|c| c.type_ == update.type_ && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or_else(|| Time(Timestamp::now()));
    conditions.retain(|c| c.type_ != update.type_);
    conditions.push(Condition {
        type_: update.type_.to_string(),
        status: status.to_string(),
        reason: update.reason.to_string(),
        message: update.message,
        last_transition_time: transition,
        observed_generation: generation,
    });
    conditions.sort_by(|a, b| a.type_.cmp(&b.type_));
}

/// The condition of `type_`, if any.
pub fn condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of `type_` is `True`.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    condition(conditions, type_).is_some_and(|c| c.status == "True")
}

/// Whether two condition lists say the same (ignoring transition times), so an unchanged status
/// is not written again.
pub fn same(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(status: bool, message: &str) -> ConditionUpdate<'static> {
        ConditionUpdate {
            type_: "Ready",
            status,
            reason: if status { "Linked" } else { "Unreachable" },
            message: message.to_string(),
        }
    }

    #[test]
    fn transition_time_moves_only_with_the_status() {
        let mut conditions = Vec::new();
        set_condition(&mut conditions, update(true, "up"), Some(1));
        let first = conditions[0].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        set_condition(&mut conditions, update(true, "still up"), Some(2));
        assert_eq!(conditions.len(), 1);
        assert_eq!(conditions[0].last_transition_time, first);
        assert_eq!(conditions[0].message, "still up");
        assert_eq!(conditions[0].observed_generation, Some(2));
        set_condition(&mut conditions, update(false, "down"), Some(2));
        assert_ne!(conditions[0].last_transition_time, first);
        assert!(!is_true(&conditions, "Ready"));
    }

    #[test]
    fn same_ignores_transition_times_and_order() {
        let mut a = Vec::new();
        set_condition(&mut a, update(true, "up"), None);
        let mut b = a.clone();
        b[0].last_transition_time = Time(Timestamp::UNIX_EPOCH);
        assert!(same(&a, &b));
        set_condition(&mut b, update(false, "down"), None);
        assert!(!same(&a, &b));
    }
}
