//! Files a user names (board files, manifests, photos, recordings, models, keys), opened
//! as regular files only and read with a size bound per kind.
//!
//! A FIFO given as a manifest would block the open forever, `/dev/zero` as a photo would
//! be read until memory ran out, and a directory reads as an I/O error nobody can place:
//! each is refused here, before any byte is read, with the path and what it is. The bounds
//! are stated in README ("Input files"); a file over its kind's bound is refused without
//! being read.

use std::fs::{File, FileType};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

/// What a file is read as (its name in messages) and the most bytes it may have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputKind {
    pub name: &'static str,
    pub max_bytes: u64,
}

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// A board file: a few kilobytes of TOML; 1 MiB leaves room for comments.
pub const BOARD_FILE: InputKind = InputKind {
    name: "board file",
    max_bytes: MIB,
};
/// A `[policy]` file given to `agegate bundle --policy`: a part of a board file.
pub const POLICY_FILE: InputKind = InputKind {
    name: "policy file",
    max_bytes: MIB,
};
/// A CSV manifest (`eval`, `calibrate`, `crops`, `--recordings`): 16 MiB is about 300,000
/// rows, three times the largest set used here (FairFace), parsed into well under 100 MB.
pub const MANIFEST: InputKind = InputKind {
    name: "manifest",
    max_bytes: 16 * MIB,
};
/// A photo or a recorded frame: 64 MiB holds the largest image `[capture] max_pixels`
/// admits as JPEG or PNG; an uncompressed PNM or BMP that size is refused by the bound on
/// pixels anyway.
pub const PHOTO: InputKind = InputKind {
    name: "photo",
    max_bytes: 64 * MIB,
};
/// An MJPEG recording, read into memory whole (raw YUYV and y4m are streamed, never read
/// whole, and are only held to being regular files).
pub const RECORDING: InputKind = InputKind {
    name: "recording",
    max_bytes: 512 * MIB,
};
/// An ONNX model: the shipped ones are under 10 MB; 256 MiB is room for a float model of
/// tens of millions of weights.
pub const MODEL: InputKind = InputKind {
    name: "model file",
    max_bytes: 256 * MIB,
};
/// A minisign secret key (`agegate bundle`): a few hundred bytes.
pub const SECRET_KEY: InputKind = InputKind {
    name: "secret key",
    max_bytes: 64 * KIB,
};
/// The password of a secret key (`--password-file`).
pub const PASSWORD_FILE: InputKind = InputKind {
    name: "password file",
    max_bytes: 64 * KIB,
};

/// Why a named file cannot be read.
#[derive(Debug)]
pub enum Problem {
    Missing,
    /// What it is instead: "a FIFO", "a directory", ...
    NotRegular(&'static str),
    TooLarge,
    Io(std::io::Error),
}

/// A file a user named that is not readable as `kind`: the path, the kind, and why.
#[derive(Debug)]
pub struct InputError {
    pub kind: InputKind,
    pub path: PathBuf,
    pub problem: Problem,
}

impl InputError {
    fn new(kind: InputKind, path: &Path, problem: Problem) -> Self {
        Self {
            kind,
            path: path.to_path_buf(),
            problem,
        }
    }

    /// What is wrong, without the kind and path (for errors that name them themselves).
    pub fn reason(&self) -> String {
        match &self.problem {
            Problem::Missing => "no such file".into(),
            Problem::NotRegular(what) => format!("is {what}, not a regular file"),
            Problem::TooLarge => format!(
                "more than {}, the most a {} may have",
                bytes(self.kind.max_bytes),
                self.kind.name
            ),
            Problem::Io(cause) => cause.to_string(),
        }
    }
}

impl std::fmt::Display for InputError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let (kind, path) = (self.kind.name, self.path.display());
        write!(f, "{kind} {path}: cannot read it: {}", self.reason())
    }
}

impl std::error::Error for InputError {}

/// For the errors that carry an `io::Error` and name the path themselves: the reason
/// alone, with `NotFound` kept so a missing file is still told apart.
impl From<InputError> for std::io::Error {
    fn from(e: InputError) -> Self {
        let kind = match &e.problem {
            Problem::Missing => std::io::ErrorKind::NotFound,
            Problem::NotRegular(_) => std::io::ErrorKind::InvalidInput,
            Problem::TooLarge => std::io::ErrorKind::InvalidData,
            Problem::Io(cause) => cause.kind(),
        };
        std::io::Error::new(kind, e.reason())
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n >= MIB && n % MIB == 0 => format!("{} MiB", n / MIB),
        n if n >= KIB && n % KIB == 0 => format!("{} KiB", n / KIB),
        n => format!("{n} bytes"),
    }
}

fn describe(t: FileType) -> &'static str {
    if t.is_dir() {
        "a directory"
    } else if t.is_fifo() {
        "a FIFO"
    } else if t.is_char_device() {
        "a character device"
    } else if t.is_block_device() {
        "a block device"
    } else if t.is_socket() {
        "a socket"
    } else {
        "not a file"
    }
}

/// Opens `path` for reading if it is a regular file (a link to one is followed).
pub fn open(path: &Path, kind: InputKind) -> Result<File, InputError> {
    let fail = |problem| InputError::new(kind, path, problem);
    let io = |cause: std::io::Error| match cause.kind() {
        std::io::ErrorKind::NotFound => fail(Problem::Missing),
        _ => fail(Problem::Io(cause)),
    };
    // Looked at before opening: opening a FIFO blocks until a writer comes, opening a
    // device may act on it.
    let before = std::fs::metadata(path).map_err(io)?;
    if !before.is_file() {
        return Err(fail(Problem::NotRegular(describe(before.file_type()))));
    }
    // Non-blocking, and looked at again once open, in case the path was swapped for a FIFO
    // in between. On a regular file O_NONBLOCK changes nothing.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(io)?;
    let opened = file.metadata().map_err(io)?;
    if !opened.is_file() {
        return Err(fail(Problem::NotRegular(describe(opened.file_type()))));
    }
    Ok(file)
}

/// Opens the regular file `path`, if it holds at most `kind.max_bytes`: the file and its
/// length. A reader holds it to the bound as it reads (the file may grow meanwhile).
pub fn open_within(path: &Path, kind: InputKind) -> Result<(File, u64), InputError> {
    let file = open(path, kind)?;
    let len = file
        .metadata()
        .map_err(|e| InputError::new(kind, path, Problem::Io(e)))?
        .len();
    if len > kind.max_bytes {
        return Err(InputError::new(kind, path, Problem::TooLarge));
    }
    Ok((file, len))
}

/// Reads the regular file `path` whole into `buf` (cleared first), if it holds at most
/// `kind.max_bytes`.
pub fn read_into(path: &Path, kind: InputKind, buf: &mut Vec<u8>) -> Result<(), InputError> {
    let (file, len) = open_within(path, kind)?;
    let fail = |problem| InputError::new(kind, path, problem);
    buf.clear();
    buf.reserve(usize::try_from(len).unwrap_or(0));
    // One byte past the bound tells a file that grew since it was looked at.
    file.take(kind.max_bytes + 1)
        .read_to_end(buf)
        .map_err(|e| fail(Problem::Io(e)))?;
    if buf.len() as u64 > kind.max_bytes {
        buf.clear();
        return Err(fail(Problem::TooLarge));
    }
    Ok(())
}

/// Streams the regular file `path` into `out`, if it holds at most `kind.max_bytes`:
/// for files too large to hold in memory at once, such as a model being hashed.
pub fn copy_to(
    path: &Path,
    kind: InputKind,
    out: &mut impl std::io::Write,
) -> Result<(), InputError> {
    let (file, _) = open_within(path, kind)?;
    let fail = |problem| InputError::new(kind, path, problem);
    let copied =
        std::io::copy(&mut file.take(kind.max_bytes + 1), out).map_err(|e| fail(Problem::Io(e)))?;
    if copied > kind.max_bytes {
        return Err(fail(Problem::TooLarge));
    }
    Ok(())
}

/// The regular file `path` whole, if it holds at most `kind.max_bytes`.
pub fn read(path: &Path, kind: InputKind) -> Result<Vec<u8>, InputError> {
    let mut buf = Vec::new();
    read_into(path, kind, &mut buf)?;
    Ok(buf)
}

/// The regular file `path` whole as UTF-8 text, if it holds at most `kind.max_bytes`.
pub fn read_to_string(path: &Path, kind: InputKind) -> Result<String, InputError> {
    String::from_utf8(read(path, kind)?).map_err(|e| {
        InputError::new(
            kind,
            path,
            Problem::Io(std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const TINY: InputKind = InputKind {
        name: "test file",
        max_bytes: 8,
    };

    fn problem(path: &Path) -> String {
        read(path, TINY).unwrap_err().to_string()
    }

    #[test]
    fn devices_fifos_and_folders_are_refused_by_name() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("pipe");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        // Without the check this open would block: nobody writes to the FIFO.
        let m = problem(&fifo);
        assert!(
            m.starts_with("test file ") && m.contains("pipe: cannot read it: is a FIFO"),
            "{m}"
        );
        let m = problem(Path::new("/dev/zero"));
        assert_eq!(
            m,
            "test file /dev/zero: cannot read it: is a character device, not a regular file"
        );
        assert!(problem(dir.path()).ends_with(": is a directory, not a regular file"));
        let m = problem(&dir.path().join("none"));
        assert!(m.ends_with("none: cannot read it: no such file"), "{m}");
    }

    #[test]
    fn files_over_the_bound_are_refused_and_within_it_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"12345678").unwrap();
        assert_eq!(read(&path, TINY).unwrap(), b"12345678");
        std::fs::write(&path, b"123456789").unwrap();
        let m = problem(&path);
        assert!(
            m.ends_with("f: cannot read it: more than 8 bytes, the most a test file may have"),
            "{m}"
        );
        assert_eq!(bytes(MANIFEST.max_bytes), "16 MiB");
        assert_eq!(bytes(SECRET_KEY.max_bytes), "64 KiB");
    }

    #[test]
    fn the_io_error_keeps_the_reason_and_not_found() {
        let e: std::io::Error = open(Path::new("/dev/null"), TINY).unwrap_err().into();
        assert_eq!(e.to_string(), "is a character device, not a regular file");
        let e: std::io::Error = open(Path::new("/nonexistent/x"), TINY).unwrap_err().into();
        assert_eq!(e.kind(), std::io::ErrorKind::NotFound);
    }
}
