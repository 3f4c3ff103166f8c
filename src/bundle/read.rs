//! Reading a bundle file, bounded before anything is buffered: the file is opened as a
//! regular file only and its size bounded; each tar header is taken alone (no PAX or GNU
//! long-name records, whose bodies the tar reader would otherwise read whole and whose
//! `size=` it would obey over the bounds here); the manifest and its signature come first
//! and are checked before a listed member is read, which is then read at the size the
//! signed manifest gives. Without the fleet's key, a file makes the reader hold no more
//! than two members of [`MAX_SIGNED_BYTES`].

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::Path;

use crate::decide::Policy;
use crate::input_file::{self, InputKind};

use super::{
    bundle_id, check_listed, check_manifest, escape, BundleError, Manifest, Verified, LISTED,
    MANIFEST, MAX_MEMBER_BYTES, POLICY, SIGNATURE,
};

/// No manifest or signature may be larger (a packed manifest is under 1 KB, a signature
/// under 400 bytes): they are read before the signature is checked.
pub const MAX_SIGNED_BYTES: u64 = 64 << 10;
/// No bundle file may be larger: three members at their bound, the manifest, its signature
/// and the tar headers and padding.
pub const MAX_BUNDLE_BYTES: u64 = 3 * MAX_MEMBER_BYTES + (1 << 20);

/// Reads a bundle file and checks all of it: the member list, the signature against `key`,
/// the format, every listed hash and size, and the policy's rules.
pub fn read(path: &Path, key: &minisign_verify::PublicKey) -> Result<Verified, BundleError> {
    let format_err = |message: String| BundleError::Format {
        path: path.to_path_buf(),
        message,
    };
    // `take`: a file that grows after its size was checked is still read no further.
    let mut archive = tar::Archive::new(open_regular(path)?.take(MAX_BUNDLE_BYTES));
    let entries = archive
        .entries()
        .map_err(|e| format_err(format!("not a bundle (tar): {e}")))?
        .raw(true);
    let mut members = BTreeMap::new();
    let mut manifest: Option<Manifest> = None;
    for entry in entries {
        let mut entry = entry.map_err(|e| format_err(format!("damaged or truncated: {e}")))?;
        let name = entry
            .path()
            .map_err(|e| format_err(format!("a member's name: {e}")))?
            .to_string_lossy()
            .into_owned();
        let shown = escape(&name);
        let kind = entry.header().entry_type();
        if !kind.is_file() {
            return Err(format_err(format!(
                "member `{shown}` is {}: a bundle holds plain files only",
                describe(kind)
            )));
        }
        let listed = LISTED.contains(&name.as_str());
        if !(listed || [MANIFEST, SIGNATURE].contains(&name.as_str())) {
            return Err(format_err(format!("unexpected member `{shown}`")));
        }
        if members.contains_key(&name) {
            return Err(format_err(format!("member `{shown}` appears twice")));
        }
        let size = entry.size();
        match (&manifest, listed) {
            (None, true) => {
                return Err(format_err(format!(
                    "member `{shown}` comes before the signed manifest and its signature \
                     (they come first)"
                )))
            }
            (Some(manifest), true) => {
                let expected = manifest.files.get(&name).map_or(0, |f| f.bytes);
                if size != expected {
                    return Err(format_err(format!(
                        "member `{shown}` is {size} bytes, the signed manifest says {expected}"
                    )));
                }
            }
            (_, false) if size > MAX_SIGNED_BYTES => {
                return Err(format_err(format!(
                    "member `{shown}` claims {size} bytes, more than the {MAX_SIGNED_BYTES} \
                     a manifest or signature may hold"
                )))
            }
            (_, false) => {}
        }
        // `size` is bounded above: at most MAX_SIGNED_BYTES, or a signed size no larger
        // than MAX_MEMBER_BYTES.
        let mut bytes = Vec::with_capacity(size as usize);
        entry
            .by_ref()
            .take(size)
            .read_to_end(&mut bytes)
            .map_err(|e| format_err(format!("member `{shown}` is cut short: {e}")))?;
        if bytes.len() as u64 != size {
            return Err(format_err(format!("member `{shown}` is cut short")));
        }
        members.insert(name, bytes);
        if let (None, Some(m), Some(s)) = (&manifest, members.get(MANIFEST), members.get(SIGNATURE))
        {
            manifest = Some(check_manifest(path, m, s, key)?);
        }
    }
    let missing = [MANIFEST, SIGNATURE]
        .iter()
        .chain(&LISTED)
        .find(|name| !members.contains_key(**name));
    let (Some(manifest), None) = (manifest, missing) else {
        let name = missing.unwrap_or(&MANIFEST);
        return Err(format_err(format!(
            "no member `{name}` (damaged or truncated)"
        )));
    };
    for name in LISTED {
        check_listed(path, &manifest, name, &members[name])?;
    }
    let policy_text = std::str::from_utf8(&members[POLICY]).map_err(|_| BundleError::Policy {
        path: path.to_path_buf(),
        message: "not UTF-8 text".into(),
    })?;
    Policy::from_toml(policy_text).map_err(|e| BundleError::Policy {
        path: path.to_path_buf(),
        message: e.to_string(),
    })?;
    Ok(Verified {
        id: bundle_id(&members[MANIFEST]),
        manifest,
        members,
    })
}

/// Opens a bundle file as [`crate::input_file`] opens every file a user names: a regular
/// file only (a FIFO would block the reader forever, `/dev/zero` never end), no larger
/// than [`MAX_BUNDLE_BYTES`].
fn open_regular(path: &Path) -> Result<File, BundleError> {
    const BUNDLE: InputKind = InputKind {
        name: "bundle",
        max_bytes: MAX_BUNDLE_BYTES,
    };
    let (file, _) = input_file::open_within(path, BUNDLE).map_err(|e| BundleError::Read {
        path: path.to_path_buf(),
        cause: e.into(),
    })?;
    Ok(file)
}

/// What a tar entry that is not a plain file is, for the message refusing it.
fn describe(kind: tar::EntryType) -> String {
    let what = if kind.is_pax_local_extensions() || kind.is_pax_global_extensions() {
        "a PAX extended header"
    } else if kind.is_gnu_longname() || kind.is_gnu_longlink() {
        "a GNU long-name header"
    } else if kind.is_dir() {
        "a directory"
    } else if kind.is_symlink() || kind.is_hard_link() {
        "a link"
    } else {
        "a special entry"
    };
    let byte = char::from(kind.as_byte()).to_string();
    format!("{what} (type `{}`)", escape(&byte))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bundle::tests::{keypair, packed};
    use crate::bundle::AGE;
    use std::path::PathBuf;
    use tar::EntryType;

    /// A tar of these headers, each followed by its body (which may be shorter than the
    /// header claims: the reader must refuse before it gets there).
    fn tar_of(parts: &[(&str, u64, EntryType, &[u8])]) -> Vec<u8> {
        let mut out = vec![];
        for (name, size, kind, body) in parts {
            let mut header = tar::Header::new_gnu();
            header.set_path(name).expect("a name that fits");
            header.set_size(*size);
            header.set_mode(0o644);
            header.set_entry_type(*kind);
            header.set_cksum();
            out.extend_from_slice(header.as_bytes());
            out.extend_from_slice(body);
            out.resize(out.len().next_multiple_of(512), 0);
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    fn refusal(dir: &Path, bytes: &[u8]) -> String {
        let path = dir.join("hostile.agb");
        std::fs::write(&path, bytes).unwrap();
        let (_, public) = keypair();
        read(&path, &public).expect_err("refused").to_string()
    }

    #[test]
    fn pax_and_gnu_long_name_headers_are_refused_before_their_bodies() {
        let dir = tempfile::tempdir().unwrap();
        // A PAX `size=` the tar reader would obey over the header's own small size.
        let pax = b"24 size=1073741824\n";
        let err = refusal(
            dir.path(),
            &tar_of(&[
                (
                    "PaxHeaders/manifest.json",
                    pax.len() as u64,
                    EntryType::XHeader,
                    pax,
                ),
                (MANIFEST, 10, EntryType::Regular, b"0123456789"),
            ]),
        );
        assert!(err.contains("PAX extended header"), "{err}");
        // A GNU long name of 1 GiB, which the tar reader would read whole.
        let err = refusal(
            dir.path(),
            &tar_of(&[("././@LongLink", 1 << 30, EntryType::GNULongName, b"")]),
        );
        assert!(err.contains("GNU long-name header"), "{err}");
    }

    #[test]
    fn a_member_before_the_signed_manifest_or_over_its_bound_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let err = refusal(
            dir.path(),
            &tar_of(&[(AGE, 32 << 20, EntryType::Regular, b"")]),
        );
        assert!(err.contains("before the signed manifest"), "{err}");
        let err = refusal(
            dir.path(),
            &tar_of(&[(MANIFEST, MAX_SIGNED_BYTES + 1, EntryType::Regular, b"")]),
        );
        assert!(err.contains(&MAX_SIGNED_BYTES.to_string()), "{err}");
    }

    #[test]
    fn a_member_whose_size_is_not_the_signed_one_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let (pair, public) = keypair();
        let mut bytes = std::fs::read(packed(dir.path(), "b.agb", &pair)).unwrap();
        // The age model's header, its size raised (and its checksum made right again).
        let at = (0..bytes.len())
            .step_by(512)
            .find(|&at| bytes[at..].starts_with(b"age.onnx\0"))
            .expect("the age model's header");
        let mut header = tar::Header::new_old();
        header.as_mut_bytes().copy_from_slice(&bytes[at..at + 512]);
        header.set_size(1 << 20);
        header.set_cksum();
        bytes[at..at + 512].copy_from_slice(header.as_bytes());
        let path = dir.path().join("b.agb");
        std::fs::write(&path, &bytes).unwrap();
        let err = read(&path, &public).unwrap_err().to_string();
        assert!(
            err.contains("age.onnx` is 1048576 bytes, the signed manifest says 15"),
            "{err}"
        );
    }

    #[test]
    fn a_file_over_the_bundle_bound_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.agb");
        // Sparse: no disk is used.
        File::create(&path)
            .and_then(|f| f.set_len(MAX_BUNDLE_BYTES + 1))
            .unwrap();
        let (_, public) = keypair();
        let err = read(&path, &public).unwrap_err().to_string();
        let bound = format!(
            "more than {} MiB, the most a bundle may have",
            MAX_BUNDLE_BYTES >> 20
        );
        assert!(err.contains(&bound), "{err}");
    }

    #[test]
    fn a_fifo_a_device_or_a_folder_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.agb");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .expect("mkfifo");
        assert!(made.success());
        for (path, what) in [
            (fifo, "is a FIFO, not a regular file"),
            (
                PathBuf::from("/dev/zero"),
                "is a character device, not a regular file",
            ),
            (
                dir.path().to_path_buf(),
                "is a directory, not a regular file",
            ),
        ] {
            // In a thread: opening a FIFO to read it would block until a writer came.
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn({
                let path = path.clone();
                move || {
                    let (_, public) = keypair();
                    let _ = tx.send(read(&path, &public).map(|_| ()));
                }
            });
            let result = rx
                .recv_timeout(std::time::Duration::from_secs(20))
                .unwrap_or_else(|_| panic!("{} still being read", path.display()));
            let err = result.expect_err("refused").to_string();
            assert!(
                err.contains(&path.display().to_string()) && err.contains(what),
                "{err}"
            );
        }
    }

    #[test]
    fn a_member_name_is_escaped_in_the_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let name = "x\x1b[1A\x1b[2K\r{\"installed\":\"0\"}";
        let err = refusal(dir.path(), &tar_of(&[(name, 1, EntryType::Regular, b"x")]));
        assert!(!err.chars().any(char::is_control), "{err:?}");
        assert!(err.contains("x\\u{1b}[1A\\u{1b}[2K\\r{"), "{err}");
    }
}
