//! Signed model bundles: a board's two ONNX files and its `[policy]` section, with a
//! manifest signed by minisign, so a fleet can roll out a new model and its thresholds as
//! one checked unit. `agegate bundle` packs one, `agegate install-bundle` verifies it and
//! installs it, `agegate rollback` returns to the one before.
//!
//! A bundle file is a tar archive of exactly these members: `manifest.json`,
//! `manifest.json.minisig`, `detector.onnx`, `age.onnx`, `policy.toml`, the first two
//! first. The signature covers the manifest; the manifest holds every other member's
//! SHA-256 and size, so one signature check and three hash checks vouch for all of it.
//! Everything is checked in memory before a byte is written: a bad signature, a truncated
//! or altered file, a bundle for another board or a policy that does not validate never
//! reaches the disk. Reading is bounded ([`read`]): without the fleet's key, a file can
//! make the reader hold no more than the manifest and signature bounds.
//!
//! Installed, under the root a board names (`[models] bundle`):
//!
//! ```text
//! <root>/<id>/              one folder per bundle (id: the manifest's SHA-256, 16 digits)
//! <root>/current -> <id>    what the daemon runs
//! <root>/previous -> <id>   what `rollback` returns to
//! <root>/.lock              locked (flock) by the one install or rollback at work
//! ```
//!
//! A new bundle is written to `<root>/.<id>.partial`, each file synced, then renamed to
//! `<root>/<id>`; `current` and `previous` are symbolic links replaced by rename, so a
//! power cut at any point leaves either the old set or the new one, never a mix. Only the
//! current and previous bundles are kept. The daemon reads a bundle through `current` once,
//! at start, and checks its signature again then.

mod install;
mod read;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::digest::Sha256;

use install::link_target;
pub use install::{rollback, stage, RootLock, Staged, LOCK_FILE, LOCK_WAIT};
pub use read::{read, MAX_BUNDLE_BYTES, MAX_SIGNED_BYTES};

/// `manifest.format` of the bundles this build writes and reads.
pub const FORMAT: &str = "agegate-bundle/1";
pub const MANIFEST: &str = "manifest.json";
pub const SIGNATURE: &str = "manifest.json.minisig";
pub const DETECTOR: &str = "detector.onnx";
pub const AGE: &str = "age.onnx";
pub const POLICY: &str = "policy.toml";
/// The members the manifest lists (everything but itself and its signature).
const LISTED: [&str; 3] = [DETECTOR, AGE, POLICY];
/// No listed member may be larger (the shipped age model is 7.6 MB): the reader holds a
/// bundle in memory, and a board has little of it. A manifest listing a larger member is
/// refused even when signed.
pub const MAX_MEMBER_BYTES: u64 = 64 << 20;
pub const CURRENT: &str = "current";
pub const PREVIOUS: &str = "previous";

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{}: cannot read it: {cause}", escape_path(.path))]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{}: cannot write it: {cause}", escape_path(.path))]
    Write {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("bundle {}: {message}", escape_path(.path))]
    Format { path: PathBuf, message: String },
    #[error("bundle {}: signature refused: {message}", escape_path(.path))]
    Signature { path: PathBuf, message: String },
    #[error("bundle {}: {member} hashes to {found}, its manifest says {}", escape_path(.path), escape(.expected))]
    Hash {
        path: PathBuf,
        member: String,
        expected: String,
        found: Sha256,
    },
    #[error("bundle {} is for board `{}`, this board is `{}`", escape_path(.path), escape(.bundle), escape(.board))]
    OtherBoard {
        path: PathBuf,
        bundle: String,
        board: String,
    },
    #[error("bundle {}: policy.toml: {message}", escape_path(.path))]
    Policy { path: PathBuf, message: String },
    #[error("key {}: {message}", escape_path(.path))]
    Key { path: PathBuf, message: String },
    #[error("{}: no previous bundle to roll back to", escape_path(.root))]
    NoPrevious { root: PathBuf },
    /// The bundle root's lock file, and why it could not be taken.
    #[error("{}: {message}", escape_path(.path))]
    Lock { path: PathBuf, message: String },
}

/// A name from outside (a tar member's name, a manifest's field) as a message shows it:
/// control and other invisible characters as Rust escapes (`\u{1b}`), the rest as it is. A
/// raw escape sequence in a member's name could rewrite the terminal's last lines and
/// forge an "installed" report.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        // Quotes and backslashes are printable: only what `escape_debug` escapes otherwise.
        if matches!(c, '\\' | '"' | '\'') {
            out.push(c);
        } else {
            out.extend(c.escape_debug());
        }
    }
    out
}

/// A path as a message shows it (see [`escape`]).
pub fn escape_path(path: &Path) -> String {
    escape(&path.to_string_lossy())
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
    // What no board would read is not signed.
    if let Some((name, bytes)) = members
        .iter()
        .find(|(_, bytes)| bytes.len() as u64 > MAX_MEMBER_BYTES)
    {
        return Err(BundleError::Format {
            path: out.to_path_buf(),
            message: format!(
                "{name} is {} bytes, more than the {MAX_MEMBER_BYTES} a member may hold",
                bytes.len()
            ),
        });
    }
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
                escape(&manifest.format)
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
    if let Some((name, listed)) = manifest
        .files
        .iter()
        .find(|(_, listed)| listed.bytes > MAX_MEMBER_BYTES)
    {
        return Err(BundleError::Format {
            path: path.to_path_buf(),
            message: format!(
                "the manifest lists {name} at {} bytes, more than the {MAX_MEMBER_BYTES} a member may hold",
                listed.bytes
            ),
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

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    pub(super) const POLICY_TOML: &str =
        "[policy]\nlegal_age = 18\nchallenge_age = 25\nk_sigma = 1.0\n";

    pub(super) fn keypair() -> (minisign::KeyPair, minisign_verify::PublicKey) {
        let pair = minisign::KeyPair::generate_unencrypted_keypair().expect("keypair");
        let public = minisign_verify::PublicKey::from_base64(&pair.pk.to_base64()).expect("pk");
        (pair, public)
    }

    pub(super) fn contents<'a>(board: &'a str, policy: &'a str) -> Contents<'a> {
        Contents {
            board,
            label: "test",
            detector: b"detector bytes",
            age: b"age model bytes",
            policy_toml: policy,
        }
    }

    pub(super) fn packed(dir: &Path, name: &str, pair: &minisign::KeyPair) -> PathBuf {
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

    #[test]
    fn an_installed_bundle_altered_on_disk_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("bundles");
        let (pair, public) = keypair();
        let bundle = read(&packed(dir.path(), "a.agb", &pair), &public).unwrap();
        let lock = RootLock::acquire(&root, LOCK_WAIT).unwrap();
        stage(&bundle, &lock).unwrap().commit().unwrap();
        let policy = root.join(CURRENT).join(POLICY);
        std::fs::write(
            &policy,
            "[policy]\nlegal_age = 18\nchallenge_age = 18\nk_sigma = 1.0\n",
        )
        .unwrap();
        let err = open_current(&root, &public).unwrap_err();
        assert!(matches!(err, BundleError::Hash { .. }), "{err}");
    }

    #[test]
    fn names_from_outside_are_shown_escaped() {
        let forged = "age.onnx\x1b[1A\x1b[2K\r{\"installed\":\"x\"}\u{202e}\n";
        let shown = escape(forged);
        assert!(!shown.chars().any(|c| c.is_control()), "{shown}");
        assert_eq!(
            shown,
            "age.onnx\\u{1b}[1A\\u{1b}[2K\\r{\"installed\":\"x\"}\\u{202e}\\n"
        );
        let plain = "/var/lib/agegate/bundles/rpi5 v2's \"best\".agb";
        assert_eq!(escape(plain), plain, "a plain name is shown as it is");
        let err = BundleError::Format {
            path: PathBuf::from("/tmp/b\x1b[2J.agb"),
            message: "m".into(),
        };
        assert_eq!(err.to_string(), "bundle /tmp/b\\u{1b}[2J.agb: m");
    }
}
