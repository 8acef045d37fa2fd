//! The kubelet's atomic writer layout for Secret, ConfigMap, downwardAPI and projected volumes,
//! so a running container sees a new set of files all at once, never half of one:
//!
//! ```text
//! <volume>/..2026_12_05_00_31_57.000123456/ca.crt   the files of one generation
//! <volume>/..data -> ..2026_12_05_00_31_57.000123456 swapped by rename(2) of a temporary link
//! <volume>/ca.crt -> ..data/ca.crt                   what the container opens
//! ```
//!
//! A new generation is written completely into a fresh timestamped directory first
//! ([`AtomicDir::stage`]); only then is a temporary symlink renamed over `..data`
//! ([`Staged::commit`]), which is atomic, and the previous generation is removed. The visible
//! names are relative symlinks, so they resolve through the bind mount inside the container too.
//! Everything here is plain data and `std::fs`, testable without an API server.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::OsString;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

/// The symlink naming the current generation.
pub const DATA_LINK: &str = "..data";
/// The link renamed over [`DATA_LINK`]; a leftover one (crash mid-swap) is removed next time.
const DATA_LINK_TMP: &str = "..data_tmp";

#[derive(Debug, thiserror::Error)]
pub enum AtomicError {
    #[error("path {0} escapes the volume or uses a reserved name (..*)")]
    BadPath(String),
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> AtomicError {
    let path = path.to_owned();
    move |source| AtomicError::Io { op, path, source }
}

/// One file of a volume: its bytes and permission bits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileData {
    pub content: Vec<u8>,
    pub mode: u32,
}

/// Everything a volume shows: relative path → file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Payload {
    files: BTreeMap<PathBuf, FileData>,
}

impl Payload {
    /// Adds `rel` (relative, no `..`, first component not starting with `..`, which this layout
    /// reserves); a later file at the same path replaces an earlier one, as in a kubelet.
    pub fn insert(&mut self, rel: &str, content: Vec<u8>, mode: i32) -> Result<(), AtomicError> {
        let path = Path::new(rel);
        let normal = path.components().all(|c| matches!(c, Component::Normal(_)));
        let reserved = path
            .components()
            .next()
            .is_none_or(|c| c.as_os_str().to_string_lossy().starts_with(".."));
        if !normal || reserved {
            return Err(AtomicError::BadPath(rel.to_owned()));
        }
        // Negative or out-of-range modes fall back to the kubelet's default.
        let mode = u32::try_from(mode).unwrap_or(0o644) & 0o7777;
        self.files
            .insert(path.to_owned(), FileData { content, mode });
        Ok(())
    }

    pub fn files(&self) -> &BTreeMap<PathBuf, FileData> {
        &self.files
    }

    /// The first path components: the names visible at the top of the volume.
    fn top_level(&self) -> BTreeSet<OsString> {
        self.files
            .keys()
            .filter_map(|p| p.components().next())
            .map(|c| c.as_os_str().to_owned())
            .collect()
    }
}

/// A volume directory written in the atomic layout.
#[derive(Debug, Clone)]
pub struct AtomicDir {
    dir: PathBuf,
}

/// A generation written to its own directory but not visible yet.
#[derive(Debug)]
pub struct Staged {
    dir: PathBuf,
    name: OsString,
    top_level: BTreeSet<OsString>,
}

impl AtomicDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// What the current generation holds; None before the first write.
    pub fn current(&self) -> Result<Option<Payload>, AtomicError> {
        let data = self.dir.join(DATA_LINK);
        match std::fs::symlink_metadata(&data) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io("stat", &data)(e)),
            Ok(_) => {}
        }
        let mut files = BTreeMap::new();
        read_tree(&data, Path::new(""), &mut files)?;
        Ok(Some(Payload { files }))
    }

    /// Makes `payload` the volume's contents unless it already is; returns whether it swapped.
    pub fn write(&self, payload: &Payload) -> Result<bool, AtomicError> {
        if self.current()?.as_ref() == Some(payload) {
            return Ok(false);
        }
        self.stage(payload)?.commit()?;
        Ok(true)
    }

    /// Writes `payload` into a fresh timestamped directory; the volume still shows the previous
    /// generation until [`Staged::commit`].
    pub fn stage(&self, payload: &Payload) -> Result<Staged, AtomicError> {
        std::fs::create_dir_all(&self.dir).map_err(io("create", &self.dir))?;
        let (name, generation) = self.fresh_generation_dir()?;
        for (rel, file) in payload.files() {
            let path = generation.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).map_err(io("create", parent))?;
            }
            std::fs::write(&path, &file.content).map_err(io("write", &path))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(file.mode))
                .map_err(io("chmod", &path))?;
        }
        Ok(Staged {
            dir: self.dir.clone(),
            name,
            top_level: payload.top_level(),
        })
    }

    /// `..<UTC date and time>.<nanoseconds>`, like the kubelet's; a suffix if that exists.
    fn fresh_generation_dir(&self) -> Result<(OsString, PathBuf), AtomicError> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let stamp = format!("..{}.{:09}", utc_stamp(now.as_secs()), now.subsec_nanos());
        for attempt in 0u32.. {
            let name = if attempt == 0 {
                stamp.clone()
            } else {
                format!("{stamp}_{attempt}")
            };
            let path = self.dir.join(&name);
            match std::fs::create_dir(&path) {
                Ok(()) => return Ok((name.into(), path)),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(io("create", &path)(e)),
            }
        }
        // 0u32.. only ends after u32::MAX attempts, each a distinct name.
        Err(AtomicError::BadPath(stamp))
    }
}

impl Staged {
    /// Swaps the staged generation in (rename of a temporary `..data` link), then makes the
    /// visible names match it and removes older generations.
    pub fn commit(self) -> Result<(), AtomicError> {
        let tmp = self.dir.join(DATA_LINK_TMP);
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(io("remove", &tmp)(e));
            }
            _ => {}
        }
        std::os::unix::fs::symlink(&self.name, &tmp).map_err(io("symlink", &tmp))?;
        let data = self.dir.join(DATA_LINK);
        std::fs::rename(&tmp, &data).map_err(io("rename", &data))?;

        for top in &self.top_level {
            let visible = self.dir.join(top);
            let target = Path::new(DATA_LINK).join(top);
            if std::fs::read_link(&visible).is_ok_and(|t| t == target) {
                continue;
            }
            remove_any(&visible)?;
            std::os::unix::fs::symlink(&target, &visible).map_err(io("symlink", &visible))?;
        }
        let entries = std::fs::read_dir(&self.dir).map_err(io("list", &self.dir))?;
        for entry in entries {
            let entry = entry.map_err(io("list", &self.dir))?;
            let name = entry.file_name();
            let reserved = name.to_string_lossy().starts_with("..");
            let stale = if reserved {
                name != DATA_LINK && name != self.name
            } else {
                // A visible name the new generation no longer has (a key removed).
                !self.top_level.contains(&name)
            };
            if stale {
                remove_any(&entry.path())?;
            }
        }
        Ok(())
    }
}

/// Removes a file, symlink or directory tree; absent is fine.
fn remove_any(path: &Path) -> Result<(), AtomicError> {
    let meta = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("stat", path)(e)),
        Ok(m) => m,
    };
    let removed = if meta.is_dir() {
        std::fs::remove_dir_all(path)
    } else {
        std::fs::remove_file(path)
    };
    removed.map_err(io("remove", path))
}

fn read_tree(
    root: &Path,
    rel: &Path,
    out: &mut BTreeMap<PathBuf, FileData>,
) -> Result<(), AtomicError> {
    let dir = root.join(rel);
    for entry in std::fs::read_dir(&dir).map_err(io("list", &dir))? {
        let entry = entry.map_err(io("list", &dir))?;
        let rel = rel.join(entry.file_name());
        let path = entry.path();
        let meta = std::fs::metadata(&path).map_err(io("stat", &path))?;
        if meta.is_dir() {
            read_tree(root, &rel, out)?;
        } else {
            let content = std::fs::read(&path).map_err(io("read", &path))?;
            let mode = meta.permissions().mode() & 0o7777;
            out.insert(rel, FileData { content, mode });
        }
    }
    Ok(())
}

/// `YYYY_MM_DD_HH_MM_SS` (UTC) of a Unix time, without a date library.
fn utc_stamp(secs: u64) -> String {
    let days = secs / 86_400;
    let rem = secs % 86_400;
    let (h, m, s) = (rem / 3600, rem % 3600 / 60, rem % 60);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm, for non-negative days).
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!("{year:04}_{month:02}_{d:02}_{h:02}_{m:02}_{s:02}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(files: &[(&str, &str)]) -> Payload {
        let mut p = Payload::default();
        for (k, v) in files {
            p.insert(k, v.as_bytes().to_vec(), 0o644).unwrap();
        }
        p
    }

    fn visible(dir: &Path, key: &str) -> String {
        std::fs::read_to_string(dir.join(key)).unwrap()
    }

    fn generations(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("..") && n != DATA_LINK)
            .collect();
        out.sort();
        out
    }

    const KEYS: [&str; 3] = ["ca.crt", "c-0.crt", "c-0.key"];

    #[test]
    fn a_staged_set_stays_invisible_until_the_swap_and_then_every_key_shows_it() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = AtomicDir::new(tmp.path().join("tls"));
        let old = payload(&[("ca.crt", "ca"), ("c-0.crt", "old"), ("c-0.key", "old")]);
        let new = payload(&[("ca.crt", "ca"), ("c-0.crt", "new"), ("c-0.key", "new")]);
        assert!(volume.write(&old).unwrap());

        let staged = volume.stage(&new).unwrap();
        for key in KEYS {
            let want = if key == "ca.crt" { "ca" } else { "old" };
            assert_eq!(visible(volume.path(), key), want, "{key} before the swap");
        }
        assert_eq!(volume.current().unwrap(), Some(old));

        staged.commit().unwrap();
        for key in KEYS {
            let want = if key == "ca.crt" { "ca" } else { "new" };
            assert_eq!(visible(volume.path(), key), want, "{key} after the swap");
            let link = std::fs::read_link(volume.path().join(key)).unwrap();
            assert_eq!(link, Path::new(DATA_LINK).join(key));
        }
        assert_eq!(volume.current().unwrap(), Some(new));
        assert_eq!(
            generations(volume.path()).len(),
            1,
            "the previous generation is removed"
        );
    }

    #[test]
    fn an_unchanged_set_is_not_written_again() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = AtomicDir::new(tmp.path());
        let p = payload(&[("a", "1")]);
        assert!(volume.write(&p).unwrap());
        let before = std::fs::read_link(tmp.path().join(DATA_LINK)).unwrap();
        assert!(!volume.write(&p).unwrap());
        assert_eq!(
            std::fs::read_link(tmp.path().join(DATA_LINK)).unwrap(),
            before
        );
    }

    #[test]
    fn keys_no_longer_in_the_set_disappear_and_new_ones_appear() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = AtomicDir::new(tmp.path());
        volume
            .write(&payload(&[("a", "1"), ("gone", "x")]))
            .unwrap();
        volume
            .write(&payload(&[("a", "2"), ("dir/b", "3")]))
            .unwrap();
        assert!(!tmp.path().join("gone").exists());
        assert!(std::fs::symlink_metadata(tmp.path().join("gone")).is_err());
        assert_eq!(visible(tmp.path(), "a"), "2");
        assert_eq!(visible(tmp.path(), "dir/b"), "3");
    }

    #[test]
    fn modes_are_written_and_compared() {
        let tmp = tempfile::tempdir().unwrap();
        let volume = AtomicDir::new(tmp.path());
        let mut p = Payload::default();
        p.insert("k", b"v".to_vec(), 0o400).unwrap();
        volume.write(&p).unwrap();
        let mode = std::fs::metadata(tmp.path().join("k"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o7777, 0o400);
        let mut wider = Payload::default();
        wider.insert("k", b"v".to_vec(), 0o644).unwrap();
        assert!(volume.write(&wider).unwrap(), "a mode change is a change");
    }

    #[test]
    fn paths_that_escape_or_use_reserved_names_are_refused() {
        let mut p = Payload::default();
        for bad in ["../x", "/etc/x", "a/../../x", "..data", "..2026/x", ""] {
            assert!(
                matches!(p.insert(bad, vec![], 0o644), Err(AtomicError::BadPath(_))),
                "{bad}"
            );
        }
        assert!(p.insert("a/..b", vec![], 0o644).is_ok());
    }

    #[test]
    fn generation_names_carry_the_utc_date() {
        assert_eq!(utc_stamp(0), "1970_01_01_00_00_00");
        assert_eq!(utc_stamp(1_796_430_717), "2026_12_05_00_31_57");
        assert_eq!(utc_stamp(951_782_400), "2000_02_29_00_00_00");
    }
}
