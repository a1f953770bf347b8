//! Error categories: the fixed set of labels reconcile errors are counted under.
//!
//! Every module has its own error enum; each maps its variants to one `Category`, so metrics
//! and Events never carry an error message or an object name as a label.

/// The fixed category of an error, for metrics.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Category {
    /// The API server refused or failed a request (transient; retried).
    Api,
    /// A write lost a race (409 Conflict or a precondition); retried on the next pass.
    Conflict,
    /// This replica is not (or no longer) the leader; nothing was written.
    NotLeader,
    /// An object's content is invalid; waits for a change.
    InvalidSpec,
    /// An object the operator must not touch (e.g. a namespace of another tenant).
    Ownership,
    /// Encoding or decoding failed (a bug or an incompatible API).
    Serialization,
}

impl Category {
    /// Every category, for pre-registering metric series.
    pub const ALL: [Category; 6] = [
        Category::Api,
        Category::Conflict,
        Category::NotLeader,
        Category::InvalidSpec,
        Category::Ownership,
        Category::Serialization,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Category::Api => "api",
            Category::Conflict => "conflict",
            Category::NotLeader => "not_leader",
            Category::InvalidSpec => "invalid_spec",
            Category::Ownership => "ownership",
            Category::Serialization => "serialization",
        }
    }

    /// The category of a kube client error: 409 is a conflict, other failures are API ones.
    pub fn of_kube(e: &kube::Error) -> Category {
        match e {
            kube::Error::Api(s) if s.code == 409 => Category::Conflict,
            kube::Error::SerdeError(_) => Category::Serialization,
            _ => Category::Api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn category_labels_are_distinct_snake_case_words() {
        let labels: std::collections::BTreeSet<&str> =
            Category::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(labels.len(), Category::ALL.len());
        assert!(
            labels
                .iter()
                .all(|l| l.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
    }
}
