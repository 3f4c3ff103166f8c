//! SHA-256 of model files and manifests, as `sha256sum` prints it: what a board file pins
//! (`[models] detector_sha256`, `age_sha256`), what the model-file guard compares, and what
//! a calibration records of its set; and a model file a board names with its pin, which
//! every component with models (`[models]`, `[liveness]`) reads the same way.

use std::path::{Path, PathBuf};

use sha2::Digest;

use crate::input_file;
use crate::settings::KeyError;

/// A SHA-256 digest.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Sha256(pub [u8; 32]);

impl Sha256 {
    pub fn of_bytes(bytes: &[u8]) -> Self {
        Self(sha2::Sha256::digest(bytes).into())
    }

    /// Streams the model file (a model is megabytes): a regular file only, and no more
    /// than a model may hold (a FIFO or a device would never end).
    pub fn of_file(path: &Path) -> std::io::Result<Self> {
        let mut hasher = sha2::Sha256::new();
        input_file::copy_to(path, input_file::MODEL, &mut hasher)?;
        Ok(Self(hasher.finalize().into()))
    }

    /// 64 hex digits, either case; `None` for anything else.
    pub fn parse_hex(text: &str) -> Option<Self> {
        let text = text.as_bytes();
        if text.len() != 64 {
            return None;
        }
        let mut out = [0u8; 32];
        for (byte, pair) in out.iter_mut().zip(text.chunks_exact(2)) {
            let digit = |c: u8| char::from(c).to_digit(16);
            *byte = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
        }
        Some(Self(out))
    }
}

/// Lower-case hex.
impl std::fmt::Display for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

impl std::fmt::Debug for Sha256 {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sha256({self})")
    }
}

/// One model file a board names, and the SHA-256 it pins it to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFile {
    /// The board key of the pin, for messages.
    pub key: &'static str,
    pub path: PathBuf,
    pub pinned: Option<Sha256>,
}

/// `path` resolved against the board's folder `base`, if it names a regular file there
/// (what is wrong with it named otherwise: missing, a FIFO, a directory).
pub(crate) fn existing_model_file(
    key: &str,
    base: &Path,
    path: &Path,
) -> Result<PathBuf, KeyError> {
    let full = base.join(path);
    input_file::open(&full, input_file::MODEL).map_err(|e| KeyError::new(key, e.to_string()))?;
    Ok(full)
}

/// A model file's pin as a board writes it (`sha256sum`'s hex), if given.
pub(crate) fn parse_pin(key: &str, text: Option<&str>) -> Result<Option<Sha256>, KeyError> {
    text.map(|t| {
        Sha256::parse_hex(t.trim()).ok_or_else(|| {
            KeyError::new(
                key,
                format!("`{t}` is not a SHA-256 (64 hex digits, as sha256sum prints)"),
            )
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_matches_sha256sum() {
        // `printf abc | sha256sum`
        let abc = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(Sha256::of_bytes(b"abc").to_string(), abc);
        assert_eq!(Sha256::parse_hex(abc), Some(Sha256::of_bytes(b"abc")));
        assert_eq!(
            Sha256::parse_hex(&abc.to_uppercase()),
            Some(Sha256::of_bytes(b"abc"))
        );
        for bad in ["", &abc[1..], &format!("{abc}0"), &abc.replace('b', "g")] {
            assert_eq!(Sha256::parse_hex(bad), None, "{bad}");
        }
    }

    #[test]
    fn a_file_hashes_as_its_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, vec![7u8; 100_000]).unwrap();
        assert_eq!(
            Sha256::of_file(&path).unwrap(),
            Sha256::of_bytes(&[7u8; 100_000])
        );
        assert!(Sha256::of_file(&dir.path().join("none")).is_err());
    }
}
