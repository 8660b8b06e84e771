//! Discovery: which files to follow, from the include globs.
//!
//! A scan walks each include glob's fixed directory prefix (e.g. `/var/log/containers`
//! for `/var/log/containers/*.log`), keeps the paths the include set matches and the
//! exclude set does not, resolves symlinks and checks confinement: a link must point
//! inside one of the allowed roots (a link to `/etc/shadow` is refused, and said so
//! once). The target must be a regular file; the stream's Kubernetes metadata comes
//! from its path, and the namespace/pod/container filters (and logferry's own pod)
//! decide whether it is followed.
//!
//! Resolving a link costs a `readlink` per component of both paths (16 system calls
//! for a kubelet link), for every link, on every rescan: on a node with 5,000
//! containers that was most of an idle logferry's time. The kubelet's links hold the
//! resolved path of their target already; so a link found to hold its own resolved
//! path is remembered (a hash of its path and one of its text: 16 bytes, nothing else
//! per link), and the next scan reads the link (one call): if it still says the same,
//! that is the resolved path, inside the roots as it was, and it is only checked to be
//! a regular file still (one `stat`). Anything else — new text, a target gone or not a
//! regular file, a link never resolved in full — is resolved and checked in full. (A
//! directory on the target's path turned into a symlink since is seen only when the
//! link changes; the kubelet creates those directories itself.)

use std::collections::{HashMap, HashSet};
use std::fs;
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use globset::GlobSet;

use std::sync::Arc;

use crate::config::{PodFilter, TailConfig};
use crate::route::Router;
use crate::event::KubeMeta;

use super::meta;

/// A file to follow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    /// Symlinks resolved: the stream's identity.
    pub key: PathBuf,
    /// As matched by the include glob.
    pub path: PathBuf,
    pub kube: Option<KubeMeta>,
}

/// What [`Discovery::check_one`] makes of a path.
#[derive(Debug, PartialEq, Eq)]
pub enum Checked {
    Follow(Box<Found>),
    /// Gone, not matched, excluded, filtered out or refused.
    Ignore,
    /// A directory: a scan finds what it holds.
    Scan,
}

pub struct Discovery {
    include: GlobSet,
    exclude: GlobSet,
    /// (fixed prefix, how many levels below it the glob reaches; `None`: any).
    walks: Vec<(PathBuf, Option<usize>)>,
    roots: Vec<PathBuf>,
    pods: PodFilter,
    /// A container no sink's route selects is not followed.
    router: Arc<Router>,
    /// Paths already reported as refused, so each is logged once.
    refused: HashSet<PathBuf>,
    /// Links whose text was their resolved path, by hash of the link's path: the hash
    /// of that text (see the module's documentation). Kept for the links of the last
    /// scan and those admitted since.
    admitted: HashMap<u64, u64>,
    /// The previous scan's, while a scan runs.
    previous: HashMap<u64, u64>,
    hasher: std::collections::hash_map::RandomState,
}

/// How deep a `**` glob is walked.
const MAX_DEPTH: usize = 8;

impl Discovery {
    pub fn new(cfg: &TailConfig, router: Arc<Router>) -> Self {
        let walks = cfg.include.iter().map(|g| glob_prefix(g)).collect();
        let roots = cfg.roots.iter().map(|r| fs::canonicalize(r).unwrap_or_else(|_| r.clone())).collect();
        Self {
            include: cfg.include_set.clone(),
            exclude: cfg.exclude.clone(),
            walks,
            roots,
            pods: cfg.pods.clone(),
            router,
            refused: HashSet::new(),
            admitted: HashMap::new(),
            previous: HashMap::new(),
            hasher: Default::default(),
        }
    }

    /// The directories to watch for new and removed files.
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for (prefix, _) in &self.walks {
            // A prefix not there yet (`/var/log/containers` on a node still starting):
            // its nearest existing ancestor, whose new entry triggers a rescan, after
            // which the prefix itself is watched.
            if let Some(dir) = prefix.ancestors().find(|d| d.is_dir()) {
                if !dirs.iter().any(|d| d == dir) {
                    dirs.push(dir.to_path_buf());
                }
            }
        }
        dirs
    }

    /// Every file to follow now, keyed by its resolved path, and whether the scan
    /// was complete (a directory that could not be listed — out of descriptors, say —
    /// makes it incomplete: absence from it then proves nothing).
    pub fn scan(&mut self) -> (HashMap<PathBuf, Found>, bool) {
        let mut matched = Vec::new();
        let mut complete = true;
        for (prefix, depth) in self.walks.clone() {
            complete &= self.walk(&prefix, depth.unwrap_or(MAX_DEPTH), &mut matched);
        }
        let mut found = HashMap::new();
        // What this scan admits is remembered anew: links not seen any more are forgotten.
        self.previous = std::mem::take(&mut self.admitted);
        for path in matched {
            if let Some(f) = self.admit(path) {
                found.entry(f.key.clone()).or_insert(f);
            }
        }
        self.previous = HashMap::new();
        (found, complete)
    }

    /// One path that just appeared in a watched directory (a new link): a file to
    /// follow, one to leave alone, or a directory (what it holds needs a scan).
    pub fn check_one(&mut self, path: &Path) -> Checked {
        match fs::symlink_metadata(path) {
            Err(_) => Checked::Ignore,
            Ok(md) if md.is_dir() => Checked::Scan,
            Ok(_) if !self.include.is_match(path) || self.exclude.is_match(path) => Checked::Ignore,
            Ok(_) => self.admit(path.to_path_buf()).map_or(Checked::Ignore, |f| Checked::Follow(Box::new(f))),
        }
    }

    /// Collects matching files under `dir`; false if a directory could not be read
    /// (one that does not exist is simply empty).
    fn walk(&self, dir: &Path, levels: usize, out: &mut Vec<PathBuf>) -> bool {
        let entries = match fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return true,
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot list a directory; this scan is incomplete");
                return false;
            }
        };
        let mut complete = true;
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(ft) = entry.file_type() else { continue };
            if ft.is_dir() && levels > 1 {
                complete &= self.walk(&path, levels - 1, out);
            } else if !ft.is_dir() && self.include.is_match(&path) && !self.exclude.is_match(&path) {
                out.push(path);
            }
        }
        complete
    }

    /// The resolved path of the link `path`, if it says what it said when it was
    /// resolved in full and found to hold its own resolved path, and that is a
    /// regular file (a `readlink` and a `stat`); with the hash of that text.
    fn known_target(&self, link: u64, path: &Path) -> Option<(PathBuf, u64)> {
        let text = *self.previous.get(&link).or_else(|| self.admitted.get(&link))?;
        let target = fs::read_link(path).ok()?;
        let same = self.hash(&target) == text && fs::metadata(&target).is_ok_and(|md| md.is_file());
        same.then_some((target, text))
    }

    fn hash(&self, path: &Path) -> u64 {
        self.hasher.hash_one(path.as_os_str().as_bytes())
    }

    /// Resolves, confines and filters one matched path.
    fn admit(&mut self, path: PathBuf) -> Option<Found> {
        let link = self.hash(&path);
        let key = match self.known_target(link, &path) {
            Some((key, text)) => {
                self.admitted.insert(link, text);
                key
            }
            None => self.resolve(link, &path)?,
        };
        let kube = meta::for_file(&path, &key);
        let allowed = match &kube {
            Some(k) => self.pods.allows(&k.namespace, &k.pod, &k.container),
            None => self.pods.allows("", "", ""),
        };
        if !allowed || !self.router.selects(kube.as_ref()) {
            return None;
        }
        self.refused.remove(&path);
        Some(Found { key, path, kube })
    }

    /// Resolves `path` in full and checks what it leads to: inside the roots, a
    /// regular file (or, for a link dangling mid-rotation, a file of a directory that
    /// is there). A link that holds its own resolved path is remembered.
    /// (`link` is the hash of `path`.)
    fn resolve(&mut self, link: u64, path: &Path) -> Option<PathBuf> {
        let (key, exists) = match fs::canonicalize(path) {
            Ok(k) => (k, true),
            // Between the kubelet's rename and the runtime's reopen, the link dangles
            // for a moment: the stream is still there.
            Err(_) => match resolve_dangling(path) {
                Some(k) => (k, false),
                None => {
                    tracing::debug!(path = %path.display(), "cannot resolve");
                    return None;
                }
            },
        };
        if key != path && !self.roots.iter().any(|r| key.starts_with(r)) {
            self.refuse(path, || format!("it points outside the allowed roots (to {}); add its directory to tail.roots to follow it", key.display()));
            return None;
        }
        match fs::metadata(&key) {
            Ok(md) if md.is_file() => {}
            Ok(_) => {
                self.refuse(path, || "it is not a regular file".to_string());
                return None;
            }
            Err(_) if !exists => {}
            Err(_) => return None,
        }
        if exists && fs::read_link(path).is_ok_and(|text| text == key) {
            self.admitted.insert(link, self.hash(&key));
        }
        Some(key)
    }

    fn refuse(&mut self, path: &Path, why: impl FnOnce() -> String) {
        if self.refused.insert(path.to_path_buf()) {
            tracing::warn!(path = %path.display(), "not following {}: {}", path.display(), why());
        }
    }
}

/// Where a link whose target is missing points, if the target's directory exists
/// (its directory resolved, the missing file name kept).
fn resolve_dangling(link: &Path) -> Option<PathBuf> {
    let target = fs::read_link(link).ok()?;
    let target = match target.is_absolute() {
        true => target,
        false => link.parent()?.join(target),
    };
    let dir = fs::canonicalize(target.parent()?).ok()?;
    Some(dir.join(target.file_name()?))
}

/// The fixed directory in front of a glob's first wildcard, and how many path levels
/// the rest spans (`None` with `**`).
fn glob_prefix(glob: &str) -> (PathBuf, Option<usize>) {
    let path = Path::new(glob);
    let mut prefix = PathBuf::new();
    let mut rest = 0;
    let mut any_depth = false;
    let mut wild = false;
    for c in path.components() {
        let s = c.as_os_str().to_string_lossy();
        if !wild && !s.contains(['*', '?', '[', '{']) {
            prefix.push(c);
            continue;
        }
        wild = true;
        if matches!(c, Component::Normal(_)) {
            rest += 1;
            any_depth |= s == "**";
        }
    }
    if !wild {
        // A plain file path: watch its directory.
        let file = prefix.clone();
        return (file.parent().map(Path::to_path_buf).unwrap_or(file), Some(1));
    }
    (prefix, (!any_depth).then_some(rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        assert_eq!(glob_prefix("/var/log/containers/*.log"), ("/var/log/containers".into(), Some(1)));
        assert_eq!(glob_prefix("/var/log/pods/*/*/*.log"), ("/var/log/pods".into(), Some(3)));
        assert_eq!(glob_prefix("/var/log/pods/**/*.log"), ("/var/log/pods".into(), None));
        assert_eq!(glob_prefix("/var/log/app.log"), ("/var/log".into(), Some(1)));
    }

    /// A node under `r`: `containers/` for the links, one pod's container directory
    /// (returned) holding an empty `0.log`.
    fn node(r: &Path) -> (&Path, PathBuf) {
        let pod = r.join("pods/shop_web_uid-1/app");
        fs::create_dir_all(&pod).unwrap();
        fs::create_dir_all(r.join("containers")).unwrap();
        fs::write(pod.join("0.log"), b"").unwrap();
        (r, pod)
    }

    /// Discovery of `r/containers/*.log` confined to `r/pods`, with `extra` in `[tail]`.
    fn discovery(r: &Path, extra: &str) -> Discovery {
        let text = format!(
            "data_dir = \"{r}/data\"\n[tail]\ninclude = [\"{r}/containers/*.log\"]\nroots = [\"{r}/pods\"]\n{extra}[sink]\ntype = \"stdout\"\n",
            r = r.display()
        );
        let config = crate::config::Config::from_toml_str_with_env(&text, &crate::config::EnvView::default()).unwrap();
        Discovery::new(&config.tail, Arc::new(crate::route::Router::everything()))
    }

    /// A new link is judged on its own (pod churn must not rescan every link).
    #[test]
    fn one_new_path_is_followed_ignored_or_scanned() {
        let dir = tempfile::tempdir().unwrap();
        let (r, pod) = node(dir.path());
        let mut d = discovery(r, "exclude_namespaces = [\"kube-*\"]\n");
        let link = r.join("containers/web_shop_app-0123.log");
        std::os::unix::fs::symlink(pod.join("0.log"), &link).unwrap();
        match d.check_one(&link) {
            Checked::Follow(f) => assert_eq!((f.key, f.kube.unwrap().namespace), (fs::canonicalize(pod.join("0.log")).unwrap(), "shop".to_string())),
            other => panic!("{other:?}"),
        }
        // Filtered out, not matched, gone: left alone, no scan.
        let kube = r.join("pods/kube-system_dns_uid-2/dns");
        fs::create_dir_all(&kube).unwrap();
        fs::write(kube.join("0.log"), b"").unwrap();
        let filtered = r.join("containers/dns_kube-system_dns-0456.log");
        std::os::unix::fs::symlink(kube.join("0.log"), &filtered).unwrap();
        assert_eq!(d.check_one(&filtered), Checked::Ignore);
        fs::write(r.join("containers/notes.txt"), b"").unwrap();
        assert_eq!(d.check_one(&r.join("containers/notes.txt")), Checked::Ignore);
        assert_eq!(d.check_one(&r.join("containers/gone.log")), Checked::Ignore);
        fs::create_dir(r.join("containers/sub.log")).unwrap();
        assert_eq!(d.check_one(&r.join("containers/sub.log")), Checked::Scan);
    }

    /// A link admitted once is read again cheaply on later scans, and judged in full
    /// again the moment it says something else or its target changes.
    #[test]
    fn later_scans_reuse_what_a_link_resolved_to_until_it_changes() {
        let dir = tempfile::tempdir().unwrap();
        let (r, pod) = node(dir.path());
        fs::create_dir_all(r.join("elsewhere")).unwrap();
        fs::write(pod.join("1.log"), b"").unwrap();
        fs::write(r.join("elsewhere/secret.log"), b"").unwrap();
        let mut d = discovery(r, "");
        let link = r.join("containers/web_shop_app-0123.log");
        let keys = |d: &mut Discovery| {
            let mut k: Vec<PathBuf> = d.scan().0.into_keys().collect();
            k.sort();
            k
        };
        let zero = fs::canonicalize(pod.join("0.log")).unwrap();
        let one = fs::canonicalize(pod.join("1.log")).unwrap();
        std::os::unix::fs::symlink(pod.join("0.log"), &link).unwrap();
        assert_eq!(keys(&mut d), vec![zero.clone()]);
        assert_eq!(d.admitted.len(), 1);
        assert_eq!(keys(&mut d), vec![zero.clone()], "found again from what was remembered");
        // Pointed elsewhere inside the roots, then outside them.
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(pod.join("1.log"), &link).unwrap();
        assert_eq!(keys(&mut d), vec![one.clone()]);
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(r.join("elsewhere/secret.log"), &link).unwrap();
        assert_eq!(keys(&mut d), Vec::<PathBuf>::new(), "outside the roots: refused again");
        assert!(d.admitted.is_empty());
        // Back inside; then its target replaced by a directory, then deleted with its pod.
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(pod.join("0.log"), &link).unwrap();
        assert_eq!(keys(&mut d), vec![zero.clone()]);
        fs::remove_file(pod.join("0.log")).unwrap();
        fs::create_dir(pod.join("0.log")).unwrap();
        assert_eq!(keys(&mut d), Vec::<PathBuf>::new(), "not a regular file any more");
        fs::remove_dir(pod.join("0.log")).unwrap();
        fs::write(pod.join("0.log"), b"").unwrap();
        assert_eq!(keys(&mut d), vec![zero.clone()]);
        // Dangling for a moment (mid-rotation): still found, from the full resolution.
        fs::remove_file(pod.join("0.log")).unwrap();
        assert_eq!(keys(&mut d), vec![zero.clone()]);
        fs::write(pod.join("0.log"), b"").unwrap();
        // A relative link is found, resolved in full each time, not remembered.
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink("../pods/shop_web_uid-1/app/0.log", &link).unwrap();
        assert_eq!(keys(&mut d), vec![zero.clone()]);
        assert!(d.admitted.is_empty());
        fs::remove_dir_all(r.join("pods/shop_web_uid-1")).unwrap();
        assert_eq!(keys(&mut d), Vec::<PathBuf>::new(), "the pod's directory is gone");
        // A link removed is forgotten.
        fs::remove_file(&link).unwrap();
        assert_eq!(keys(&mut d), Vec::<PathBuf>::new());
        assert!(d.admitted.is_empty());
    }
}
