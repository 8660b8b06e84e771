//! Kubernetes metadata from a log file's path alone — no API server calls.
//!
//! The kubelet lays logs out as
//! `/var/log/pods/<namespace>_<pod>_<uid>/<container>/<restart>.log` (rotated files add
//! `.<YYYYMMDD-hhmmss>` and later `.gz`) and links each live file from
//! `/var/log/containers/<pod>_<namespace>_<container>-<containerID>.log`.
//! Namespaces, pod names and container names are DNS labels or subdomains and cannot
//! contain `_`, so splitting on it is unambiguous. Only the path's last three parts
//! are read, so a node's tree copied anywhere (for `replay`) still yields metadata.

use std::path::Path;

use super::rotation::RotatedName;
use crate::event::KubeMeta;

/// Metadata from a path under `/var/log/pods` (or a copy of that layout).
pub fn from_pods_path(path: &Path) -> Option<KubeMeta> {
    let name = path.file_name()?.to_str()?;
    let restart_count = RotatedName::parse(name)?.live_stem().strip_suffix(".log")?.parse().ok()?;
    let container_dir = path.parent()?;
    let container = container_dir.file_name()?.to_str()?;
    let pod_dir = container_dir.parent()?.file_name()?.to_str()?;
    let mut parts = pod_dir.split('_');
    let (namespace, pod, uid) = (parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || [namespace, pod, uid, container].iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(KubeMeta {
        namespace: namespace.into(),
        pod: pod.into(),
        pod_uid: Some(uid.into()),
        container: container.into(),
        restart_count: Some(restart_count),
    })
}

/// Metadata from a `/var/log/containers/<pod>_<namespace>_<container>-<id>.log` name,
/// for a link whose target is gone: pod uid and restart count are then unknown.
pub fn from_containers_link(path: &Path) -> Option<KubeMeta> {
    let stem = path.file_name()?.to_str()?.strip_suffix(".log")?;
    let mut parts = stem.split('_');
    let (pod, namespace, rest) = (parts.next()?, parts.next()?, parts.next()?);
    let (container, id) = rest.rsplit_once('-')?;
    let is_id = id.len() >= 12 && id.bytes().all(|c| c.is_ascii_hexdigit());
    if parts.next().is_some() || !is_id || [pod, namespace, container].iter().any(|s| s.is_empty()) {
        return None;
    }
    Some(KubeMeta {
        namespace: namespace.into(),
        pod: pod.into(),
        pod_uid: None,
        container: container.into(),
        restart_count: None,
    })
}

/// Metadata for a file found at `path` that resolves to `resolved`: the pods layout
/// of the target wins, then the name of a `/var/log/containers` link.
pub fn for_file(path: &Path, resolved: &Path) -> Option<KubeMeta> {
    from_pods_path(resolved).or_else(|| from_pods_path(path)).or_else(|| from_containers_link(path))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(ns: &str, pod: &str, uid: Option<&str>, c: &str, n: Option<u32>) -> KubeMeta {
        KubeMeta {
            namespace: ns.into(),
            pod: pod.into(),
            pod_uid: uid.map(Into::into),
            container: c.into(),
            restart_count: n,
        }
    }

    #[test]
    fn pods_layout_live_rotated_and_compressed() {
        let want = meta("kube-system", "coredns-5d78c9869d-abcde", Some("0f1e2d3c-aaaa-bbbb-cccc-1234567890ab"), "coredns", Some(3));
        for name in ["3.log", "3.log.20261121-100000", "3.log.20261121-100000.gz"] {
            let p = format!("/var/log/pods/kube-system_coredns-5d78c9869d-abcde_0f1e2d3c-aaaa-bbbb-cccc-1234567890ab/coredns/{name}");
            assert_eq!(from_pods_path(Path::new(&p)), Some(want.clone()), "{name}");
        }
    }

    #[test]
    fn a_copied_tree_still_names_its_pod() {
        let p = Path::new("/home/me/node-dump/pods/default_web-0_uid-1/nginx/0.log");
        assert_eq!(from_pods_path(p), Some(meta("default", "web-0", Some("uid-1"), "nginx", Some(0))));
    }

    #[test]
    fn containers_link_names() {
        let id = "4f2b6c9d8e7a6b5c4d3e2f1a0b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c";
        let p = format!("/var/log/containers/web-0_default_nginx-sidecar-{id}.log");
        assert_eq!(from_containers_link(Path::new(&p)), Some(meta("default", "web-0", None, "nginx-sidecar", None)));
    }

    #[test]
    fn other_paths_have_no_metadata() {
        for p in [
            "/var/log/syslog",
            "/var/log/pods/not-a-pod-dir/c/0.log",
            "/var/log/pods/a_b_c_d/c/0.log",
            "/var/log/pods/ns_pod_uid/c/app.log",
            "/var/log/containers/nounderscores.log",
            "/var/log/containers/a_b_c-nothex.log",
            "0.log",
        ] {
            let p = Path::new(p);
            assert_eq!(for_file(p, p), None, "{}", p.display());
        }
    }
}
