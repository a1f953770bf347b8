//! What can keep the election from working, in words an administrator can act on, and a
//! log that reports each problem once instead of on every retry.

/// Election errors.
#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    /// The Lease's namespace does not exist, so no replica can ever lead.
    #[error(
        "namespace {0} does not exist: apply manifests/ (kubectl apply -k manifests/) or create it"
    )]
    NamespaceMissing(String),
    /// RBAC does not let the operator use Leases there.
    #[error(
        "the operator may not {verb} Leases in namespace {namespace}: apply manifests/ (its Role and RoleBinding) or grant it"
    )]
    Forbidden {
        /// get, create or update.
        verb: &'static str,
        /// The Lease's namespace.
        namespace: String,
    },
    /// A guarded write lost the race: another replica wrote the Lease first (normal).
    #[error("another replica wrote Lease {namespace}/{name} first")]
    Conflict {
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
    },
    /// Reading or writing the Lease failed otherwise.
    #[error("cannot {verb} Lease {namespace}/{name}")]
    Api {
        /// get, create or update.
        verb: &'static str,
        /// The Lease's namespace.
        namespace: String,
        /// The Lease's name.
        name: String,
        /// What the API server said.
        #[source]
        source: kube::Error,
    },
}

impl LeaderError {
    /// Classify an API error of `verb` on the Lease `namespace/name`.
    pub fn from_api(verb: &'static str, namespace: &str, name: &str, e: kube::Error) -> Self {
        match &e {
            // Creating in a namespace that does not exist: 404 on the namespace itself.
            kube::Error::Api(s) if s.code == 404 && verb == "create" => {
                LeaderError::NamespaceMissing(namespace.to_owned())
            }
            kube::Error::Api(s) if s.code == 409 => LeaderError::Conflict {
                namespace: namespace.to_owned(),
                name: name.to_owned(),
            },
            kube::Error::Api(s) if s.code == 403 => LeaderError::Forbidden {
                verb,
                namespace: namespace.to_owned(),
            },
            _ => LeaderError::Api {
                verb,
                namespace: namespace.to_owned(),
                name: name.to_owned(),
                source: e,
            },
        }
    }

    /// Whether an administrator must act (retrying alone cannot help).
    pub fn needs_admin(&self) -> bool {
        matches!(
            self,
            LeaderError::NamespaceMissing(_) | LeaderError::Forbidden { .. }
        )
    }
}

/// The error and its sources as one line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Reports election problems once each: an error line when a problem appears or changes,
/// a debug line while it repeats, an info line when it is over.
#[derive(Debug, Default)]
pub struct ProblemLog {
    current: Option<String>,
}

impl ProblemLog {
    /// Record a failed round; returns the text when it is new (and was logged as an error).
    pub fn failed(&mut self, e: &LeaderError) -> Option<String> {
        if matches!(e, LeaderError::Conflict { .. }) {
            // Part of a normal election, not a problem (and no proof that one ended).
            tracing::debug!(error = %e, "lost a Lease write race");
            return None;
        }
        let text = chain(e);
        if self.current.as_deref() == Some(text.as_str()) {
            tracing::debug!(error = %text, "leader election still failing");
            return None;
        }
        tracing::error!("leader election cannot proceed: {text}");
        self.current = Some(text.clone());
        Some(text)
    }

    /// Record a round that worked; true when it ended a problem.
    pub fn ok(&mut self) -> bool {
        let was = self.current.take();
        if was.is_some() {
            tracing::info!("leader election works again");
        }
        was.is_some()
    }

    /// The problem now, if any.
    pub fn current(&self) -> Option<&str> {
        self.current.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api_error(code: u16, message: &str) -> kube::Error {
        kube::Error::Api(
            kube::core::Status::failure(message, "NotFound")
                .with_code(code)
                .boxed(),
        )
    }

    #[test]
    fn creating_the_lease_in_a_missing_namespace_says_what_to_apply() {
        let e = LeaderError::from_api(
            "create",
            "ironvisor-system",
            "ironvisor-operator",
            api_error(404, "namespaces \"ironvisor-system\" not found"),
        );
        assert_eq!(
            e.to_string(),
            "namespace ironvisor-system does not exist: apply manifests/ (kubectl apply -k manifests/) or create it"
        );
        assert!(e.needs_admin());
    }

    #[test]
    fn forbidden_names_the_verb_and_other_errors_keep_their_cause() {
        let e = LeaderError::from_api("update", "ns", "l", api_error(403, "no"));
        assert!(
            e.to_string()
                .contains("may not update Leases in namespace ns")
        );
        assert!(e.needs_admin());
        let e = LeaderError::from_api("get", "ns", "l", api_error(500, "etcd down"));
        assert!(!e.needs_admin());
        assert_eq!(e.to_string(), "cannot get Lease ns/l");
        assert!(chain(&e).contains("etcd down"), "{}", chain(&e));
        let e = LeaderError::from_api("get", "ns", "l", api_error(404, "x"));
        assert!(
            !matches!(e, LeaderError::NamespaceMissing(_)),
            "a missing Lease is not a missing namespace"
        );
    }

    #[test]
    fn a_problem_is_reported_once_until_it_changes_or_ends() {
        let mut log = ProblemLog::default();
        let missing = LeaderError::NamespaceMissing("ironvisor-system".into());
        let first = log.failed(&missing).expect("new problem");
        assert!(first.starts_with("namespace ironvisor-system does not exist"));
        for _ in 0..10 {
            assert_eq!(log.failed(&missing), None, "repeats are not reported");
        }
        assert_eq!(log.current(), Some(first.as_str()));
        let forbidden = LeaderError::Forbidden {
            verb: "create",
            namespace: "ironvisor-system".into(),
        };
        assert!(log.failed(&forbidden).is_some(), "a different problem is");
        assert!(log.ok(), "the end of a problem is reported");
        assert!(!log.ok());
        assert_eq!(log.current(), None);
        assert!(log.failed(&missing).is_some(), "and its return");
        let conflict = LeaderError::Conflict {
            namespace: "n".into(),
            name: "l".into(),
        };
        assert_eq!(log.failed(&conflict), None, "a lost race is no problem");
        assert!(log.current().is_some(), "nor the end of one");
    }
}
