//! Signed model bundles: a board's two ONNX files and its `[policy]` section, with a
//! manifest signed by minisign, so a fleet can roll out a new model and its thresholds as
//! one checked unit. `agegate bundle` packs one, `agegate install-bundle` verifies it and
//! installs it, `agegate rollback` returns to the one before.
//!
//! A bundle file is a tar archive of exactly these members: `manifest.json`,
//! `manifest.json.minisig`, `detector.onnx`, `age.onnx`, `policy.toml`. The signature
//! covers the manifest; the manifest holds every other member's SHA-256 and size, so one
//! signature check and three hash checks vouch for all of it. Everything is checked in
//! memory before a byte is written: a bad signature, a truncated or altered file, a bundle
//! for another board or a policy that does not validate never reaches the disk.
//!
//! Installed, under the root a board names (`[models] bundle`):
//!
//! ```text
//! <root>/<id>/              one folder per bundle (id: the manifest's SHA-256, 16 digits)
//! <root>/current -> <id>    what the daemon runs
//! <root>/previous -> <id>   what `rollback` returns to
//! ```
//!
//! A new bundle is written to `<root>/.<id>.partial`, each file synced, then renamed to
//! `<root>/<id>`; `current` and `previous` are symbolic links replaced by rename, so a
//! power cut at any point leaves either the old set or the new one, never a mix. Only the
//! current and previous bundles are kept. The daemon reads a bundle through `current` once,
//! at start, and checks its signature again then.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::decide::{Policy, RawPolicy};
use crate::digest::Sha256;

/// `manifest.format` of the bundles this build writes and reads.
pub const FORMAT: &str = "agegate-bundle/1";
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.json.minisig";
pub const DETECTOR: &str = "detector.onnx";
pub const AGE: &str = "age.onnx";
pub const POLICY: &str = "policy.toml";
/// The members the manifest lists (everything but itself and its signature).
const LISTED: [&str; 3] = [DETECTOR, AGE, POLICY];
/// No member may be larger (the shipped age model is 7.6 MB): a corrupt size field must
/// not make the reader allocate a board's whole memory.
pub const MAX_MEMBER_BYTES: u64 = 64 << 20;
pub const CURRENT: &str = "current";
pub const PREVIOUS: &str = "previous";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: cannot read it: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{path}: cannot write it: {cause}")]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("bundle {path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("bundle {path}: signature refused: {message}")]
    Signature { path: PathBuf, message: String },
    #[error("bundle {path}: {member} hashes to {found}, its manifest says {expected}")]
    Hash {
        path: PathBuf,
        member: String,
        expected: String,
        found: Sha256,
    },
    #[error("bundle {path} is for board `{bundle}`, this board is `{board}`")]
    OtherBoard {
        path: PathBuf,
        bundle: String,
        board: String,
    },
    #[error("bundle {path}: policy.toml: {message}")]
    Policy { path: PathBuf, message: String },
    #[error("key {path}: {message}")]
    Key { path: PathBuf, message: String },
    #[error("{root}: no previous bundle to roll back to")]
    NoPrevious { root: PathBuf },
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: String,
    /// The `name` of the board file the bundle is for.
    pub board: String,
    /// What the bundle is, for people (`agegate bundle --label`).
    pub label: String,
    /// The agegate version that packed it.
    pub packed_by: String,
    /// SHA-256 and size of each listed member, by member name.
    pub files: BTreeMap<String, ListedFile>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListedFile {
    pub sha256: String,
    pub bytes: u64,
}

/// `policy.toml`: one `[policy]` table, as in a board file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    policy: RawPolicy,
}

/// A minisign public key file (`minisign -G` writes it, `agegate bundle` signs for it).
pub fn read_public_key(path: &Path) -> Result<minisign_verify::PublicKey, BundleError> {
    let text = std::fs::read_to_string(path).map_err(|cause| BundleError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    // The key line alone (the file's comment line, if any, is untrusted and not part of
    // the key), so two files holding the same key compare equal.
    let key_line = text
        .lines()
        .map(str::trim)
        .rfind(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
        .unwrap_or_default();
    minisign_verify::PublicKey::from_base64(key_line).map_err(|e| BundleError::Key {
        path: path.to_path_buf(),
        message: format!("not a minisign public key ({e})"),
    })
}

/// Parses and validates a `policy.toml` text (the board file's own rules).
pub fn parse_policy(text: &str) -> Result<Policy, String> {
    let file: PolicyFile = toml::from_str(text).map_err(|e| e.message().to_string())?;
    Policy::from_raw(file.policy).map_err(|e| e.to_string())
}

/// What `agegate bundle` packs.
pub struct Contents<'a> {
    pub board: &'a str,
    pub label: &'a str,
    pub detector: &'a [u8],
    pub age: &'a [u8],
    pub policy_toml: &'a str,
}

/// Packs and signs a bundle, written to `out` through a temporary file and a rename.
pub fn pack(
    contents: &Contents,
    secret_key: &minisign::SecretKey,
    out: &Path,
) -> Result<Manifest, BundleError> {
    let members: [(&str, &[u8]); 3] = [
        (DETECTOR, contents.detector),
        (AGE, contents.age),
        (POLICY, contents.policy_toml.as_bytes()),
    ];
    let manifest = Manifest {
        format: FORMAT.into(),
        board: contents.board.into(),
        label: contents.label.into(),
        packed_by: format!("agegate {}", env!("CARGO_PKG_VERSION")),
        files: members
            .iter()
            .map(|(name, bytes)| {
                let listed = ListedFile {
                    sha256: Sha256::of_bytes(bytes).to_string(),
                    bytes: bytes.len() as u64,
                };
                (name.to_string(), listed)
            })
            .collect(),
    };
    let manifest_bytes = serde_json::to_vec_pretty(&manifest).expect("a manifest serialises");
    let trusted = format!(
        "agegate bundle for board {}: {}",
        manifest.board, manifest.label
    );
    let signature = minisign::sign(
        None,
        secret_key,
        std::io::Cursor::new(&manifest_bytes),
        Some(&trusted),
        Some("agegate model bundle"),
    )
    .map_err(|e| BundleError::Key {
        path: out.to_path_buf(),
        message: format!("cannot sign: {e}"),
    })?;
    let write_err = |cause| BundleError::Write {
        path: out.to_path_buf(),
        cause,
    };
    let tmp = out.with_extension("partial");
    let file = std::fs::File::create(&tmp).map_err(write_err)?;
    let mut tar = tar::Builder::new(file);
    let signature_text = signature.into_string();
    let all: Vec<(&str, &[u8])> = [
        (MANIFEST, manifest_bytes.as_slice()),
        (SIGNATURE, signature_text.as_bytes()),
    ]
    .into_iter()
    .chain(members)
    .collect();
    for (name, bytes) in all {
        let mut header = tar::Header::new_gnu();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o644);
        header.set_cksum();
        tar.append_data(&mut header, name, bytes)
            .map_err(write_err)?;
    }
    let file = tar.into_inner().map_err(write_err)?;
    file.sync_all().map_err(write_err)?;
    std::fs::rename(&tmp, out).map_err(write_err)?;
    Ok(manifest)
}

/// A bundle whose signature, hashes and policy have been checked, held in memory.
#[derive(Debug)]
pub struct Verified {
    pub manifest: Manifest,
    /// The manifest's SHA-256, first 16 digits: the installed folder's name.
    pub id: String,
    members: BTreeMap<String, Vec<u8>>,
}

impl Verified {
    pub fn member(&self, name: &str) -> &[u8] {
        self.members.get(name).map_or(&[], Vec::as_slice)
    }

    /// Refuses a bundle packed for another board (`name` in the board file).
    pub fn check_board(&self, path: &Path, board: &str) -> Result<(), BundleError> {
        if self.manifest.board == board {
            Ok(())
        } else {
            Err(BundleError::OtherBoard {
                path: path.to_path_buf(),
                bundle: self.manifest.board.clone(),
                board: board.into(),
            })
        }
    }
}

/// Reads a bundle file and checks all of it: the member list, the signature against `key`,
/// the format, every listed hash and size, and the policy's rules.
pub fn read(path: &Path, key: &minisign_verify::PublicKey) -> Result<Verified, BundleError> {
    let format_err = |message: String| BundleError::Format {
        path: path.to_path_buf(),
        message,
    };
    let file = std::fs::File::open(path).map_err(|cause| BundleError::Read {
        path: path.to_path_buf(),
        cause,
    })?;
    let mut archive = tar::Archive::new(file);
    let mut members = BTreeMap::new();
    let entries = archive
        .entries()
        .map_err(|e| format_err(format!("not a bundle (tar): {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| format_err(format!("damaged or truncated: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| format_err(format!("a member's name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let known =
            [MANIFEST, SIGNATURE].contains(&name.as_str()) || LISTED.contains(&name.as_str());
        if !(entry.header().entry_type().is_file() && known) {
            return Err(format_err(format!("unexpected member `{name}`")));
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > MAX_MEMBER_BYTES {
            return Err(format_err(format!(
                "member `{name}` claims {size} bytes, more than {MAX_MEMBER_BYTES}"
            )));
        }
        let mut bytes = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut bytes)
            .map_err(|e| format_err(format!("member `{name}` is cut short: {e}")))?;
        if bytes.len() as u64 != size {
            return Err(format_err(format!("member `{name}` is cut short")));
        }
        if members.insert(name.clone(), bytes).is_some() {
            return Err(format_err(format!("member `{name}` appears twice")));
        }
    }
    for name in [MANIFEST, SIGNATURE].iter().chain(&LISTED) {
        if !members.contains_key(*name) {
            return Err(format_err(format!(
                "no member `{name}` (damaged or truncated)"
            )));
        }
    }
    let manifest = check_manifest(path, &members[MANIFEST], &members[SIGNATURE], key)?;
    for name in LISTED {
        check_listed(path, &manifest, name, &members[name])?;
    }
    let policy_text = std::str::from_utf8(&members[POLICY]).map_err(|_| BundleError::Policy {
        path: path.to_path_buf(),
        message: "not UTF-8 text".into(),
    })?;
    parse_policy(policy_text).map_err(|message| BundleError::Policy {
        path: path.to_path_buf(),
        message,
    })?;
    Ok(Verified {
        id: bundle_id(&members[MANIFEST]),
        manifest,
        members,
    })
}

fn bundle_id(manifest_bytes: &[u8]) -> String {
    Sha256::of_bytes(manifest_bytes).to_string()[..16].to_string()
}

/// Checks the signature over the manifest's bytes, then parses it.
fn check_manifest(
    path: &Path,
    manifest_bytes: &[u8],
    signature_bytes: &[u8],
    key: &minisign_verify::PublicKey,
) -> Result<Manifest, BundleError> {
    let refused = |message: String| BundleError::Signature {
        path: path.to_path_buf(),
        message,
    };
    let signature_text =
        std::str::from_utf8(signature_bytes).map_err(|_| refused("not minisign text".into()))?;
    let signature = minisign_verify::Signature::decode(signature_text)
        .map_err(|e| refused(format!("not a minisign signature ({e})")))?;
    key.verify(manifest_bytes, &signature, false)
        .map_err(|e| refused(format!("{e} (another key, or the manifest was altered)")))?;
    let manifest: Manifest =
        serde_json::from_slice(manifest_bytes).map_err(|e| BundleError::Format {
            path: path.to_path_buf(),
            message: format!("manifest.json: {e}"),
        })?;
    if manifest.format != FORMAT {
        return Err(BundleError::Format {
            path: path.to_path_buf(),
            message: format!(
                "format `{}`: this agegate reads `{FORMAT}`",
                manifest.format
            ),
        });
    }
    let listed: Vec<&str> = manifest.files.keys().map(String::as_str).collect();
    let mut expected = LISTED.to_vec();
    expected.sort_unstable();
    if listed != expected {
        return Err(BundleError::Format {
            path: path.to_path_buf(),
            message: format!("the manifest lists {listed:?}, a bundle holds {expected:?}"),
        });
    }
    Ok(manifest)
}

fn check_listed(
    path: &Path,
    manifest: &Manifest,
    name: &str,
    bytes: &[u8],
) -> Result<(), BundleError> {
    let listed = &manifest.files[name];
    let found = Sha256::of_bytes(bytes);
    if found.to_string() != listed.sha256.to_ascii_lowercase() || bytes.len() as u64 != listed.bytes
    {
        return Err(BundleError::Hash {
            path: path.to_path_buf(),
            member: name.into(),
            expected: listed.sha256.clone(),
            found,
        });
    }
    Ok(())
}

/// A verified bundle written to its folder but not yet made current: check what needs the
/// engine (the model contract) on [`Staged::dir`], then [`Staged::commit`]. Dropped
/// without a commit, the folder is removed and nothing else has changed.
pub struct Staged {
    root: PathBuf,
    dir: PathBuf,
    id: String,
    committed: bool,
}

impl Staged {
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
        let final_dir = self.root.join(&self.id);
        if final_dir != self.dir {
            if final_dir.exists() {
                // The same bundle again (same manifest): its folder is already complete.
                remove_dir(&self.dir)?;
            } else {
                std::fs::rename(&self.dir, &final_dir).map_err(|cause| BundleError::Write {
                    path: final_dir.clone(),
                    cause,
                })?;
            }
        }
        self.committed = true;
        let old_current = link_target(&self.root.join(CURRENT));
        let previous = match old_current {
            Some(old) if old != self.id => {
                replace_link(&self.root, PREVIOUS, &old)?;
                Some(old)
            }
            _ => link_target(&self.root.join(PREVIOUS)),
        };
        replace_link(&self.root, CURRENT, &self.id)?;
        sync_dir(&self.root)?;
        prune(&self.root, &[Some(self.id.clone()), previous.clone()])?;
        Ok(previous)
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Writes a verified bundle under `root` (made if missing) without touching `current`.
pub fn stage(bundle: &Verified, root: &Path) -> Result<Staged, BundleError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |cause| BundleError::Write { path, cause }
    };
    std::fs::create_dir_all(root).map_err(write_err(root))?;
    let dir = root.join(format!(".{}.partial", bundle.id));
    if dir.exists() {
        remove_dir(&dir)?;
    }
    std::fs::create_dir(&dir).map_err(write_err(&dir))?;
    let staged = Staged {
        root: root.to_path_buf(),
        dir,
        id: bundle.id.clone(),
        committed: false,
    };
    for (name, bytes) in &bundle.members {
        let path = staged.dir.join(name);
        let mut file = std::fs::File::create(&path).map_err(write_err(&path))?;
        file.write_all(bytes).map_err(write_err(&path))?;
        file.sync_all().map_err(write_err(&path))?;
    }
    sync_dir(&staged.dir)?;
    Ok(staged)
}

/// Makes `previous` current and `current` previous, after checking the previous bundle's
/// signature and hashes again. Returns the id now current.
pub fn rollback(root: &Path, key: &minisign_verify::PublicKey) -> Result<String, BundleError> {
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

/// An installed bundle, checked again as the daemon starts.
#[derive(Debug, Clone)]
pub struct Installed {
    /// The bundle's own folder (`current` resolved once, so a later install does not change
    /// the files under a running daemon).
    pub dir: PathBuf,
    pub manifest: Manifest,
    pub id: String,
    pub detector_sha256: Sha256,
    pub age_sha256: Sha256,
    pub policy_toml: String,
}

impl Installed {
    pub fn detector(&self) -> PathBuf {
        self.dir.join(DETECTOR)
    }

    pub fn age(&self) -> PathBuf {
        self.dir.join(AGE)
    }
}

/// The bundle `current` names under `root`.
pub fn open_current(
    root: &Path,
    key: &minisign_verify::PublicKey,
) -> Result<Installed, BundleError> {
    let link = root.join(CURRENT);
    let id = link_target(&link).ok_or_else(|| BundleError::Read {
        path: link.clone(),
        cause: std::io::Error::new(
            std::io::ErrorKind::NotFound,
            "no bundle installed (agegate install-bundle)",
        ),
    })?;
    open_dir(&root.join(id), key)
}

/// Checks an installed bundle's folder: the manifest's signature, the policy's hash and
/// rules. The model files' hashes are the board's pins, checked where they are loaded and
/// by the model-file guard.
pub fn open_dir(dir: &Path, key: &minisign_verify::PublicKey) -> Result<Installed, BundleError> {
    let read = |name: &str| {
        let path = dir.join(name);
        std::fs::read(&path).map_err(|cause| BundleError::Read { path, cause })
    };
    let manifest_bytes = read(MANIFEST)?;
    let manifest = check_manifest(dir, &manifest_bytes, &read(SIGNATURE)?, key)?;
    let policy_bytes = read(POLICY)?;
    check_listed(dir, &manifest, POLICY, &policy_bytes)?;
    let policy_toml = String::from_utf8(policy_bytes).map_err(|_| BundleError::Policy {
        path: dir.to_path_buf(),
        message: "not UTF-8 text".into(),
    })?;
    let pin = |name: &str| {
        Sha256::parse_hex(&manifest.files[name].sha256).ok_or_else(|| BundleError::Format {
            path: dir.to_path_buf(),
            message: format!("manifest.json: {name}: not a SHA-256"),
        })
    };
    Ok(Installed {
        dir: dir.to_path_buf(),
        id: bundle_id(&manifest_bytes),
        detector_sha256: pin(DETECTOR)?,
        age_sha256: pin(AGE)?,
        manifest,
        policy_toml,
    })
}

/// The id a link in the bundle root names, if it is one.
fn link_target(link: &Path) -> Option<String> {
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
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|cause| BundleError::Write {
            path: dir.to_path_buf(),
            cause,
        })
}

fn remove_dir(dir: &Path) -> Result<(), BundleError> {
    std::fs::remove_dir_all(dir).map_err(|cause| BundleError::Write {
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

    const POLICY_TOML: &str = "[policy]\nlegal_age = 18\nchallenge_age = 25\nk_sigma = 1.0\n";

    fn keypair() -> (minisign::KeyPair, minisign_verify::PublicKey) {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("keypair");
        let public = minisign_verify::PublicKey::from_base64(&pair.pk.to_base64()).expect("pk");
        (pair, public)
    }

    fn contents<'a>(board: &'a str, policy: &'a str) -> Contents<'a> {
        Contents {
            board,
            label: "test",
            detector: b"detector bytes",
            age: b"age model bytes",
            policy_toml: policy,
        }
    }

    fn packed(dir: &Path, name: &str, pair: &minisign::KeyPair) -> PathBuf {
        let out = dir.join(name);
        pack(&contents("rpi5", POLICY_TOML), &pair.sk, &out).expect("pack");
        out
    }

    #[test]
    fn a_packed_bundle_reads_back_whole() {
        let dir = tempfile::tempdir().unwrap();
        let (pair, public) = keypair();
        let path = packed(dir.path(), "b.agb", &pair);
        let bundle = read(&path, &public).expect("read");
        assert_eq!(bundle.manifest.board, "rpi5");
        assert_eq!(bundle.member(AGE), b"age model bytes");
        assert_eq!(bundle.member(POLICY), POLICY_TOML.as_bytes());
        assert_eq!(bundle.id.len(), 16);
    }

    #[test]
    fn another_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (pair, _) = keypair();
        let (_, other) = keypair();
        let err = read(&packed(dir.path(), "b.agb", &pair), &other).unwrap_err();
        assert!(matches!(err, BundleError::Signature { .. }), "{err}");
    }

    #[test]
    fn every_truncation_and_every_flipped_byte_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (pair, public) = keypair();
        let bytes = std::fs::read(packed(dir.path(), "b.agb", &pair)).unwrap();
        let cut = dir.path().join("cut.agb");
        // Every cut point up to the end of the last member's data (tar pads after it).
        let policy_at = bytes
            .windows(POLICY_TOML.len())
            .position(|w| w == POLICY_TOML.as_bytes())
            .expect("the policy is stored as it is");
        let data_end = policy_at + POLICY_TOML.len();
        for len in (0..data_end).step_by(7) {
            std::fs::write(&cut, &bytes[..len]).unwrap();
            assert!(
                read(&cut, &public).is_err(),
                "cut at {len} of {} accepted",
                bytes.len()
            );
        }
        let mut accepted = 0;
        for i in (0..data_end).step_by(5) {
            let mut flipped = bytes.clone();
            flipped[i] ^= 0x10;
            std::fs::write(&cut, &flipped).unwrap();
            if let Ok(bundle) = read(&cut, &public) {
                // Only a byte outside what is checked (a header's mtime or padding) may
                // flip unnoticed, and then the contents are exactly the signed ones.
                assert_eq!(bundle.member(AGE), b"age model bytes", "byte {i}");
                assert_eq!(bundle.member(POLICY), POLICY_TOML.as_bytes(), "byte {i}");
                accepted += 1;
            }
        }
        // Most bytes are checked (headers by their checksum, members by the signature and
        // the hashes); the rest is padding between members.
        assert!(accepted < data_end / 5 / 2, "{accepted} flips accepted");
    }

    #[test]
    fn an_invalid_policy_is_refused_even_when_signed() {
        let dir = tempfile::tempdir().unwrap();
        let (pair, public) = keypair();
        let out = dir.path().join("b.agb");
        let bad = "[policy]\nlegal_age = 18\nchallenge_age = 12\nk_sigma = 1.0\n";
        pack(&contents("rpi5", bad), &pair.sk, &out).unwrap();
        let err = read(&out, &public).unwrap_err().to_string();
        assert!(
            err.contains("policy.toml") && err.contains("challenge_age"),
            "{err}"
        );
    }

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

    #[test]
    fn install_keeps_one_previous_and_rollback_swaps_them() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bundles");
        let (pair, public) = keypair();
        let mut ids = vec![];
        for label in ["one", "two", "three"] {
            let out = dir.path().join(format!("{label}.agb"));
            let c = Contents {
                label,
                ..contents("rpi5", POLICY_TOML)
            };
            pack(&c, &pair.sk, &out).unwrap();
            let bundle = read(&out, &public).unwrap();
            let staged = stage(&bundle, &root).unwrap();
            ids.push(staged.id().to_string());
            staged.commit().unwrap();
        }
        let current = open_current(&root, &public).unwrap();
        assert_eq!(current.manifest.label, "three");
        let mut expected = vec![
            ids[1].clone(),
            ids[2].clone(),
            format!("current -> {}", ids[2]),
            format!("previous -> {}", ids[1]),
        ];
        expected.sort();
        assert_eq!(listing(&root), expected, "the first bundle is pruned");
        assert_eq!(rollback(&root, &public).unwrap(), ids[1]);
        assert_eq!(open_current(&root, &public).unwrap().manifest.label, "two");
        assert_eq!(rollback(&root, &public).unwrap(), ids[2]);
    }

    #[test]
    fn a_staged_bundle_dropped_without_commit_changes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bundles");
        let (pair, public) = keypair();
        let first = read(&packed(dir.path(), "a.agb", &pair), &public).unwrap();
        stage(&first, &root).unwrap().commit().unwrap();
        let before = listing(&root);
        let out = dir.path().join("b.agb");
        let c = Contents {
            label: "second",
            ..contents("rpi5", POLICY_TOML)
        };
        pack(&c, &pair.sk, &out).unwrap();
        let staged = stage(&read(&out, &public).unwrap(), &root).unwrap();
        assert!(staged.dir().join(AGE).is_file());
        drop(staged);
        assert_eq!(listing(&root), before);
        assert!(
            rollback(&root, &public).is_err(),
            "no previous after one install"
        );
    }

    #[test]
    fn an_installed_bundle_altered_on_disk_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bundles");
        let (pair, public) = keypair();
        let bundle = read(&packed(dir.path(), "a.agb", &pair), &public).unwrap();
        stage(&bundle, &root).unwrap().commit().unwrap();
        let policy = root.join(CURRENT).join(POLICY);
        std::fs::write(
            &policy,
            "[policy]\nlegal_age = 18\nchallenge_age = 18\nk_sigma = 1.0\n",
        )
        .unwrap();
        let err = open_current(&root, &public).unwrap_err();
        assert!(matches!(err, BundleError::Hash { .. }), "{err}");
    }
}
