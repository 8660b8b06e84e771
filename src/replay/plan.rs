//! Which files a replay reads, and in what order.
//!
//! Paths given on the command line are files or directories (walked recursively,
//! symlinks followed, each real file read once however many links lead to it). The
//! files of one container — `N.log.<stamp>.gz` …, `N.log.<stamp>`, `N.log` in one
//! directory — become one [`FileSet`], read in rotation order as one stream so that a
//! line split across a rotation is rejoined. Anything else is a set of its own.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::event::KubeMeta;
use crate::tail::meta;
use crate::tail::rotation::RotatedName;

/// One file to read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    /// As given or found while walking.
    pub path: PathBuf,
    /// With symlinks resolved.
    pub resolved: PathBuf,
    pub gzipped: bool,
    /// Size on disk.
    pub size: u64,
}

/// Files read one after another as one stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSet {
    pub files: Vec<SourceFile>,
    pub kube: Option<KubeMeta>,
}

/// A path that could not be read, with why.
#[derive(Debug)]
pub struct PlanError {
    pub path: PathBuf,
    pub error: io::Error,
}

/// Finds every file under `paths` and groups them into rotation sets.
pub fn plan(paths: &[PathBuf]) -> (Vec<FileSet>, Vec<PlanError>) {
    let mut walk = Walk::default();
    for p in paths {
        walk.visit(p, true);
    }
    (group(walk.files), walk.errors)
}

#[derive(Default)]
struct Walk {
    files: Vec<SourceFile>,
    errors: Vec<PlanError>,
    seen: HashSet<PathBuf>,
}

impl Walk {
    fn visit(&mut self, path: &Path, given: bool) {
        let resolved = match fs::canonicalize(path).and_then(|r| fs::metadata(&r).map(|m| (r, m))) {
            Ok(r) => r,
            Err(error) => return self.errors.push(PlanError { path: path.to_path_buf(), error }),
        };
        let (resolved, md) = resolved;
        if !self.seen.insert(resolved.clone()) {
            return;
        }
        if md.is_dir() {
            self.visit_dir(path);
        } else if md.is_file() {
            // The kubelet gzips into `*.gz.tmp` then renames: skip those while walking.
            let in_progress = path.extension().is_some_and(|e| e == "tmp");
            if given || !in_progress {
                let gzipped = resolved.extension().is_some_and(|e| e == "gz");
                self.files.push(SourceFile { path: path.to_path_buf(), resolved, gzipped, size: md.len() });
            }
        } else if given {
            let error = io::Error::new(io::ErrorKind::InvalidInput, "not a regular file or directory");
            self.errors.push(PlanError { path: path.to_path_buf(), error });
        }
    }

    fn visit_dir(&mut self, dir: &Path) {
        let entries = match fs::read_dir(dir).and_then(|rd| rd.collect::<Result<Vec<_>, _>>()) {
            Ok(e) => e,
            Err(error) => return self.errors.push(PlanError { path: dir.to_path_buf(), error }),
        };
        let mut paths: Vec<PathBuf> = entries.into_iter().map(|e| e.path()).collect();
        paths.sort();
        for p in paths {
            self.visit(&p, false);
        }
    }
}

/// Groups files by (directory, live name); orders each group oldest first.
fn group(files: Vec<SourceFile>) -> Vec<FileSet> {
    let mut sets: BTreeMap<(PathBuf, String), Vec<SourceFile>> = BTreeMap::new();
    for f in files {
        sets.entry(set_key(&f.resolved)).or_default().push(f);
    }
    sets.into_values()
        .map(|mut files| {
            files.sort_by_key(|f| order_key(&f.resolved));
            // While the kubelet compresses, `X.<stamp>` and `X.<stamp>.gz` both exist
            // with the same content: read the plain one only.
            files.dedup_by(|later, earlier| {
                let (a, b) = (order_key(&later.resolved), order_key(&earlier.resolved));
                (a.0, a.1) == (b.0, b.1) && later.gzipped
            });
            let kube = files.last().and_then(|f| meta::for_file(&f.path, &f.resolved));
            FileSet { files, kube }
        })
        .collect()
}

fn file_name(p: &Path) -> &str {
    p.file_name().and_then(|n| n.to_str()).unwrap_or("")
}

fn set_key(resolved: &Path) -> (PathBuf, String) {
    match RotatedName::parse(file_name(resolved)) {
        Some(r) => (resolved.parent().unwrap_or(Path::new("")).to_path_buf(), r.live_stem().to_string()),
        // Not a rotation name: a set of its own, keyed by its full path.
        None => (resolved.to_path_buf(), String::new()),
    }
}

/// Oldest first: (is live, stamp), then plain before gzipped.
fn order_key(resolved: &Path) -> (bool, String, bool) {
    match RotatedName::parse(file_name(resolved)) {
        Some(r) => {
            let (live, stamp) = r.order_key();
            (live, stamp.to_string(), r.is_gzipped())
        }
        None => (true, String::new(), false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(p, b"x\n").unwrap();
    }

    #[test]
    fn groups_rotations_and_follows_links_once() {
        let d = tempfile::tempdir().unwrap();
        let c = d.path().join("pods/ns_pod_uid/app");
        for n in ["0.log", "0.log.20261121-100000.gz", "0.log.20261121-100500", "0.log.20261121-100500.gz", "1.log", "0.log.20261121-101000.gz.tmp"] {
            touch(&c.join(n));
        }
        let links = d.path().join("containers");
        fs::create_dir_all(&links).unwrap();
        std::os::unix::fs::symlink(c.join("0.log"), links.join("pod_ns_app-0123456789abcdef.log")).unwrap();

        let (sets, errors) = plan(&[d.path().to_path_buf()]);
        assert!(errors.is_empty());
        let names: Vec<Vec<&str>> =
            sets.iter().map(|s| s.files.iter().map(|f| file_name(&f.resolved)).collect()).collect();
        assert_eq!(names, vec![vec!["0.log.20261121-100000.gz", "0.log.20261121-100500", "0.log"], vec!["1.log"]]);
        assert_eq!(sets[0].kube.as_ref().unwrap().restart_count, Some(0));
        assert_eq!(sets[1].kube.as_ref().unwrap().restart_count, Some(1));
    }

    #[test]
    fn missing_paths_are_reported_and_the_rest_kept() {
        let d = tempfile::tempdir().unwrap();
        touch(&d.path().join("a.log"));
        let (sets, errors) = plan(&[d.path().join("nope"), d.path().join("a.log")]);
        assert_eq!(sets.len(), 1);
        assert_eq!(errors.len(), 1);
        assert_eq!(errors[0].path, d.path().join("nope"));
    }
}
