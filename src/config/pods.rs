//! Which pods' logs to ship: namespace, pod and container globs, and our own pod.

use globset::GlobSet;

/// Namespace, pod and container include/exclude globs, plus logferry's own pod.
///
/// A name passes one dimension when the include list is empty or matches it, and the
/// exclude list does not: exclude wins. A file is allowed when all three pass and it
/// is not our own pod's. Our own logs are left out by default because shipping them
/// feeds back: every line logferry writes about shipping is itself shipped.
#[derive(Debug, Clone, Default)]
pub struct PodFilter {
    pub(super) namespaces: NameFilter,
    pub(super) pods: NameFilter,
    pub(super) containers: NameFilter,
    /// (namespace, pod) from `POD_NAMESPACE` and `POD_NAME` when both were set (the
    /// downward API sets them in the DaemonSet) and `exclude_own_pod` is on.
    pub(super) own_pod: Option<(String, String)>,
}

impl PodFilter {
    pub fn allows(&self, namespace: &str, pod: &str, container: &str) -> bool {
        let own = self
            .own_pod
            .as_ref()
            .is_some_and(|(ns, p)| ns == namespace && p == pod);
        !own && self.namespaces.allows(namespace)
            && self.pods.allows(pod)
            && self.containers.allows(container)
    }

    /// The pod excluded as our own, if any: `None` with `exclude_own_pod` on means
    /// the environment did not name it, which is worth a warning at start.
    pub fn own_pod(&self) -> Option<(&str, &str)> {
        self.own_pod
            .as_ref()
            .map(|(ns, p)| (ns.as_str(), p.as_str()))
    }
}

/// Include and exclude globs for one kind of name.
#[derive(Debug, Clone, Default)]
pub(super) struct NameFilter {
    /// `None`: every name is included.
    pub include: Option<GlobSet>,
    pub exclude: GlobSet,
}

impl NameFilter {
    pub(super) fn allows(&self, name: &str) -> bool {
        let included = self.include.as_ref().is_none_or(|set| set.is_match(name));
        included && !self.exclude.is_match(name)
    }
}
