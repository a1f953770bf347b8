//! Placeholder until the local control plane lands (hack/devcluster issue).
