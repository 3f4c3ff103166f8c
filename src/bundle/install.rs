//! The bundle root: staging a verified bundle, making it current, rolling back, pruning;
//! all of it under an exclusive lock on the root ([`RootLock`]).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::{escape_path, open_dir, BundleError, Verified, CURRENT, PREVIOUS};
use crate::digest::Sha256;

/// The lock file in the bundle root.
pub const LOCK_FILE: &str = ".lock";
/// How long an install or rollback waits for the one at work to finish before it gives up
/// (a contract check on a Pi takes seconds).
pub const LOCK_WAIT: Duration = Duration::from_secs(60);

/// An exclusive `flock` on `<root>/.lock`, held from staging to pruning, or for a rollback:
/// two installs at once would otherwise prune each other's staging folder or just-renamed
/// bundle and leave `current` naming an incomplete one. Released when dropped (the lock
/// goes with the file's descriptor, also when the process dies).
pub struct RootLock {
    root: PathBuf,
    _file: File,
}

impl RootLock {
    /// Locks `root` (made if missing), waiting up to `wait` for an install or rollback
    /// holding it to finish.
    pub fn acquire(root: &Path, wait: Duration) -> Result<Self, BundleError> {
        std::fs::create_dir_all(root).map_err(|cause| BundleError::Write {
            path: root.to_path_buf(),
            cause,
        })?;
        let path = root.join(LOCK_FILE);
        let lock_err = |message: String| BundleError::Lock {
            path: path.clone(),
            message,
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| lock_err(format!("cannot open the bundle root's lock file: {e}")))?;
        let started = Instant::now();
        let mut told = false;
        loop {
            // SAFETY: flock only reads the descriptor, which `file` keeps open.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(Self {
                    root: root.to_path_buf(),
                    _file: file,
                });
            }
            let e = std::io::Error::last_os_error();
            match e.kind() {
                std::io::ErrorKind::WouldBlock if started.elapsed() < wait => {}
                std::io::ErrorKind::WouldBlock => {
                    return Err(lock_err(format!(
                        "another install-bundle or rollback has held this lock for more \
                         than {} s; try again once it has finished",
                        wait.as_secs()
                    )))
                }
                std::io::ErrorKind::Interrupted => continue,
                _ => return Err(lock_err(format!("cannot lock it: {e}"))),
            }
            if !told {
                tracing::warn!(
                    lock = %escape_path(&path),
                    "another install-bundle or rollback holds the bundle root; waiting for it"
                );
                told = true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }
}

/// A verified bundle written to its folder but not yet made current: check what needs the
/// engine (the model contract) on [`Staged::dir`], then [`Staged::commit`]. Dropped
/// without a commit, the folder is removed and nothing else has changed.
pub struct Staged<'a> {
    lock: &'a RootLock,
    dir: PathBuf,
    id: String,
    /// Every member's name and SHA-256: what a folder of the same id must hold to be kept.
    hashes: Vec<(String, Sha256)>,
    committed: bool,
}

impl Staged<'_> {
    /// Where the staged bundle's files are.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Makes the staged bundle current and the one it replaces previous; removes any
    /// other. Returns the id `previous` now names, if any.
    pub fn commit(mut self) -> Result<Option<String>, BundleError> {
        let root = self.lock.root();
        let final_dir = root.join(&self.id);
        let rename = |from: &Path, to: &Path| {
            std::fs::rename(from, to).map_err(|cause| BundleError::Write {
                path: to.to_path_buf(),
                cause,
            })
        };
        if final_dir.symlink_metadata().is_err() {
            rename(&self.dir, &final_dir)?;
        } else if self.holds_all(&final_dir) {
            // The same bundle again, its folder intact: kept (it may be `current`, which
            // replacing it would leave dangling for a moment).
            remove_dir(&self.dir)?;
        } else {
            // The same bundle's folder, damaged (a file missing or changed): replaced by
            // the one just checked; the damaged one is set aside for the prune below. A
            // power cut between the renames leaves no `<id>` folder: that fails closed.
            tracing::warn!(
                folder = %escape_path(&final_dir),
                "the installed copy of this bundle is damaged; replacing it"
            );
            let aside = root.join(format!(".{}.damaged.partial", self.id));
            if aside.symlink_metadata().is_ok() {
                remove_dir(&aside)?;
            }
            rename(&final_dir, &aside)?;
            rename(&self.dir, &final_dir)?;
        }
        self.committed = true;
        let old_current = link_target(&root.join(CURRENT));
        let previous = match old_current {
            Some(old) if old != self.id => {
                replace_link(root, PREVIOUS, &old)?;
                Some(old)
            }
            _ => link_target(&root.join(PREVIOUS)),
        };
        replace_link(root, CURRENT, &self.id)?;
        sync_dir(root)?;
        prune(root, &[Some(self.id.clone()), previous.clone()])?;
        Ok(previous)
    }

    /// Whether `dir` holds every member of the staged bundle, byte for byte.
    fn holds_all(&self, dir: &Path) -> bool {
        self.hashes
            .iter()
            .all(|(name, hash)| Sha256::of_file(&dir.join(name)).is_ok_and(|h| h == *hash))
    }
}

impl Drop for Staged<'_> {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes a verified bundle under the locked root without touching `current`.
pub fn stage<'a>(bundle: &Verified, lock: &'a RootLock) -> Result<Staged<'a>, BundleError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| BundleError::Write { path, cause }
    };
    let dir = lock.root().join(format!(".{}.partial", bundle.id));
    if dir.exists() {
        remove_dir(&dir)?;
    }
    std::fs::create_dir(&dir).map_err(write_err(&dir))?;
    let staged = Staged {
        lock,
        dir,
        id: bundle.id.clone(),
        hashes: bundle
            .members
            .iter()
            .map(|(name, bytes)| (name.clone(), Sha256::of_bytes(bytes)))
            .collect(),
        committed: false,
    };
    for (name, bytes) in &bundle.members {
        let path = staged.dir.join(name);
        let mut file = File::create(&path).map_err(write_err(&path))?;
        file.write_all(bytes).map_err(write_err(&path))?;
        file.sync_all().map_err(write_err(&path))?;
    }
    sync_dir(&staged.dir)?;
    Ok(staged)
}

/// Makes `previous` current and `current` previous, after checking the previous bundle's
/// signature and hashes again. Returns the id now current.
pub fn rollback(lock: &RootLock, key: &minisign_verify::PublicKey) -> Result<String, BundleError> {
    let root = lock.root();
    let previous = link_target(&root.join(PREVIOUS)).ok_or_else(|| BundleError::NoPrevious {
        root: root.to_path_buf(),
    })?;
    open_dir(&root.join(&previous), key)?;
    let current = link_target(&root.join(CURRENT));
    replace_link(root, CURRENT, &previous)?;
    if let Some(current) = current {
        replace_link(root, PREVIOUS, &current)?;
    }
    sync_dir(root)?;
    Ok(previous)
}

/// The id a link in the bundle root names, if it is one.
pub(super) fn link_target(link: &Path) -> Option<String> {
    let target = std::fs::read_link(link).ok()?;
    target.to_str().map(str::to_string)
}

/// Points `root/name` at `target` by renaming a new link over it (atomic).
fn replace_link(root: &Path, name: &str, target: &str) -> Result<(), BundleError> {
    let tmp = root.join(format!(".{name}.new"));
    let _ = std::fs::remove_file(&tmp);
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| BundleError::Write { path, cause }
    };
    std::os::unix::fs::symlink(target, &tmp).map_err(write_err(&tmp))?;
    std::fs::rename(&tmp, root.join(name)).map_err(write_err(&root.join(name)))
}

fn sync_dir(dir: &Path) -> Result<(), BundleError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|cause| BundleError::Write {
            path: dir.to_path_buf(),
            cause,
        })
}

/// Removes a folder and what it holds (a link or file in its place too).
fn remove_dir(dir: &Path) -> Result<(), BundleError> {
    let is_dir = dir.symlink_metadata().is_ok_and(|m| m.is_dir());
    if is_dir {
        std::fs::remove_dir_all(dir)
    } else {
        std::fs::remove_file(dir)
    }
    .map_err(|cause| BundleError::Write {
        path: dir.to_path_buf(),
        cause,
    })
}

/// Removes the bundle folders (and leftover partial ones) that neither link names.
fn prune(root: &Path, keep: &[Option<String>]) -> Result<(), BundleError> {
    let entries = std::fs::read_dir(root).map_err(|cause| BundleError::Read {
        path: root.to_path_buf(),
        cause,
    })?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let is_bundle_dir = entry.file_type().is_ok_and(|t| t.is_dir())
            && (name.len() == 16 && name.bytes().all(|b| b.is_ascii_hexdigit())
                || name.ends_with(".partial"));
        if is_bundle_dir && !keep.iter().flatten().any(|k| *k == name) {
            remove_dir(&entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::tests::{contents, keypair, packed, POLICY_TOML};
    use crate::bundle::{open_current, pack, read, Contents, AGE, DETECTOR};

    fn listing(root: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(root)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = e.file_name().to_string_lossy().into_owned();
                match std::fs::read_link(e.path()) {
                    Ok(t) => format!("{name} -> {}", t.display()),
                    Err(_) => name,
                }
            })
            .collect();
        names.sort();
        names
    }

    /// A root under `dir` (not made yet), a key, and two bundles signed for it.
    fn two_bundles(dir: &Path) -> (PathBuf, minisign_verify::PublicKey, Verified, Verified) {
        let (pair, public) = keypair();
        let first = read(&packed(dir, "a.agb", &pair), &public).unwrap();
        let out = dir.join("b.agb");
        let c = Contents {
            label: "second",
            ..contents("rpi5", POLICY_TOML)
        };
        pack(&c, &pair.sk, &out).unwrap();
        let second = read(&out, &public).unwrap();
        (dir.join("bundles"), public, first, second)
    }

    #[test]
    fn install_keeps_one_previous_and_rollback_swaps_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bundles");
        let (pair, public) = keypair();
        let lock = RootLock::acquire(&root, LOCK_WAIT).unwrap();
        let mut ids = vec![];
        for label in ["one", "two", "three"] {
            let out = dir.path().join(format!("{label}.agb"));
            let c = Contents {
                label,
                ..contents("rpi5", POLICY_TOML)
            };
            pack(&c, &pair.sk, &out).unwrap();
            let bundle = read(&out, &public).unwrap();
            let staged = stage(&bundle, &lock).unwrap();
            ids.push(staged.id().to_string());
            staged.commit().unwrap();
        }
        let current = open_current(&root, &public).unwrap();
        assert_eq!(current.manifest.label, "three");
        let mut expected = vec![
            ids[1].clone(),
            ids[2].clone(),
            LOCK_FILE.to_string(),
            format!("current -> {}", ids[2]),
            format!("previous -> {}", ids[1]),
        ];
        expected.sort();
        assert_eq!(listing(&root), expected, "the first bundle is pruned");
        assert_eq!(rollback(&lock, &public).unwrap(), ids[1]);
        assert_eq!(open_current(&root, &public).unwrap().manifest.label, "two");
        assert_eq!(rollback(&lock, &public).unwrap(), ids[2]);
    }

    #[test]
    fn a_staged_bundle_dropped_without_commit_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (root, public, first, second) = two_bundles(dir.path());
        let lock = RootLock::acquire(&root, LOCK_WAIT).unwrap();
        stage(&first, &lock).unwrap().commit().unwrap();
        let before = listing(&root);
        let staged = stage(&second, &lock).unwrap();
        assert!(staged.dir().join(AGE).is_file());
        drop(staged);
        assert_eq!(listing(&root), before);
        assert!(
            rollback(&lock, &public).is_err(),
            "no previous after one install"
        );
    }

    #[test]
    fn a_damaged_folder_of_the_same_bundle_is_replaced_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let (root, public, first, second) = two_bundles(dir.path());
        let lock = RootLock::acquire(&root, LOCK_WAIT).unwrap();
        for damage in ["delete", "alter"] {
            stage(&first, &lock).unwrap().commit().unwrap();
            stage(&second, &lock).unwrap().commit().unwrap();
            // The first bundle is now `previous`: damage its folder, then install it again.
            let folder = root.join(&first.id);
            match damage {
                "delete" => std::fs::remove_file(folder.join(AGE)).unwrap(),
                _ => std::fs::write(folder.join(DETECTOR), b"detector bytes, altered").unwrap(),
            }
            stage(&first, &lock).unwrap().commit().unwrap();
            let current = open_current(&root, &public).unwrap();
            assert_eq!(current.dir, root.join(&first.id), "{damage}");
            for name in [AGE, DETECTOR] {
                assert_eq!(
                    std::fs::read(folder.join(name)).unwrap(),
                    first.member(name),
                    "{damage}: {name}"
                );
            }
            assert!(
                !listing(&root).iter().any(|n| n.contains("partial")),
                "{damage}: {:?}",
                listing(&root)
            );
        }
    }

    #[test]
    fn the_root_lock_is_exclusive_and_a_wait_for_it_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bundles");
        let held = RootLock::acquire(&root, LOCK_WAIT).unwrap();
        // flock locks belong to an open file, so a second open in this process conflicts
        // as another process's would.
        let started = Instant::now();
        let err = RootLock::acquire(&root, Duration::from_millis(300))
            .err()
            .expect("a second lock while the first is held");
        assert!(started.elapsed() >= Duration::from_millis(300));
        let text = err.to_string();
        assert!(
            text.contains(&root.join(LOCK_FILE).display().to_string())
                && text.contains("another install-bundle or rollback"),
            "{text}"
        );
        // A waiter gets it once the holder lets go.
        let waiter = std::thread::spawn({
            let root = root.clone();
            move || RootLock::acquire(&root, LOCK_WAIT).map(|_| ())
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(!waiter.is_finished(), "the waiter did not wait");
        drop(held);
        waiter.join().unwrap().expect("the lock once released");
    }
}
