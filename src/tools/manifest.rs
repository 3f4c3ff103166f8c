//! Labelled-photo manifests: CSV with a header, columns `path,age` and optionally
//! `gender,race,subject`; a relative `path` resolves against a root folder (by default the
//! manifest's), an absolute one is taken as written.

use std::path::{Path, PathBuf};

use crate::input_file;

#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    #[error("manifest {path}: cannot read it: {cause}")]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("manifest {path}: {message}")]
    Format { path: PathBuf, message: String },
    #[error("manifest {path}, line {line}: {message}")]
    Row {
        path: PathBuf,
        line: u64,
        message: String,
    },
    #[error("manifest {path}: has no rows")]
    Empty { path: PathBuf },
}

#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// As written in the manifest.
    pub rel_path: String,
    /// Resolved against the root.
    pub path: PathBuf,
    pub age: f32,
    pub gender: Option<String>,
    pub race: Option<String>,
    pub subject: Option<String>,
}

pub fn read(manifest: &Path, root: Option<&Path>) -> Result<Vec<Entry>, ManifestError> {
    let bytes =
        input_file::read(manifest, input_file::MANIFEST).map_err(|e| ManifestError::Read {
            path: manifest.to_path_buf(),
            cause: e.into(),
        })?;
    let root = match root {
        Some(r) => r.to_path_buf(),
        None => manifest.parent().unwrap_or(Path::new(".")).to_path_buf(),
    };
    parse(bytes.as_slice(), manifest, &root)
}

/// Parses manifest text from `input`; `manifest` names it in errors, paths resolve
/// against `root`.
pub fn parse(
    input: impl std::io::Read,
    manifest: &Path,
    root: &Path,
) -> Result<Vec<Entry>, ManifestError> {
    let path = manifest.to_path_buf();
    let file = input;
    let mut reader = csv::ReaderBuilder::new()
        .trim(csv::Trim::All)
        .flexible(false)
        .from_reader(file);
    let headers = reader
        .headers()
        .map_err(|e| ManifestError::Format {
            path: path.clone(),
            message: e.to_string(),
        })?
        .clone();
    if let Some(twice) = headers
        .iter()
        .enumerate()
        .find_map(|(i, h)| headers.iter().skip(i + 1).any(|o| o == h).then_some(h))
    {
        return Err(ManifestError::Format {
            path,
            message: format!("the header names the column `{twice}` twice"),
        });
    }
    let column = |name: &str| headers.iter().position(|h| h == name);
    let (Some(path_col), Some(age_col)) = (column("path"), column("age")) else {
        return Err(ManifestError::Format {
            path,
            message: format!(
                "the header must name columns `path` and `age`, it is `{}`",
                headers.iter().collect::<Vec<_>>().join(",")
            ),
        });
    };
    let (gender_col, race_col, subject_col) = (column("gender"), column("race"), column("subject"));
    let mut entries = Vec::new();
    for record in reader.records() {
        let record = record.map_err(|e| {
            let line = e.position().map_or(0, |p| p.line());
            ManifestError::Row {
                path: path.clone(),
                line,
                message: e.to_string(),
            }
        })?;
        let line = record.position().map_or(0, |p| p.line());
        let row_error = |message: String| ManifestError::Row {
            path: path.clone(),
            line,
            message,
        };
        let rel_path = record.get(path_col).unwrap_or_default().to_string();
        if rel_path.is_empty() {
            return Err(row_error("empty `path`".into()));
        }
        let age_text = record.get(age_col).unwrap_or_default();
        let age: f32 = age_text
            .parse()
            .map_err(|_| row_error(format!("age `{age_text}` is not a number")))?;
        if !(age.is_finite() && (0.0..=130.0).contains(&age)) {
            return Err(row_error(format!(
                "age {age_text} is not between 0 and 130"
            )));
        }
        let optional = |col: Option<usize>| {
            col.and_then(|c| record.get(c))
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        entries.push(Entry {
            path: root.join(&rel_path),
            rel_path,
            age,
            gender: optional(gender_col),
            race: optional(race_col),
            subject: optional(subject_col),
        });
    }
    if entries.is_empty() {
        return Err(ManifestError::Empty { path });
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn reads_optional_columns_and_resolves_paths() {
        let f = write("path,age,gender,race\na/1.jpg,23,1,\nb/2.jpg,7.5,,3\n");
        let entries = read(f.path(), Some(Path::new("/data"))).unwrap();
        assert_eq!(entries.len(), 2);
        assert_eq!(entries[0].path, PathBuf::from("/data/a/1.jpg"));
        assert_eq!(entries[0].gender.as_deref(), Some("1"));
        assert_eq!(entries[0].race, None);
        assert_eq!(entries[1].age, 7.5);
        assert_eq!(entries[1].race.as_deref(), Some("3"));
    }

    #[test]
    fn absolute_paths_are_taken_as_written() {
        // Found by the manifest fuzz target: an absolute path does not start with the root.
        let text = "path,age\n/photos/x.jpg,4.5\nrel.jpg,30\n";
        let entries = parse(text.as_bytes(), Path::new("m.csv"), Path::new("/data")).unwrap();
        assert_eq!(entries[0].path, PathBuf::from("/photos/x.jpg"));
        assert_eq!(entries[1].path, PathBuf::from("/data/rel.jpg"));
    }

    #[test]
    fn bad_manifests_name_the_cause() {
        let msg = |text: &str| read(write(text).path(), None).unwrap_err().to_string();
        assert!(msg("path,age\n").contains("has no rows"));
        assert!(msg("").contains("`path` and `age`"));
        let bad_age = msg("path,age\nx.jpg,12\ny.jpg,twelve\n");
        assert!(
            bad_age.contains("line 3") && bad_age.contains("`twelve` is not a number"),
            "{bad_age}"
        );
        assert!(msg("file,years\nx.jpg,3\n").contains("`path` and `age`"));
        assert!(msg("path,age\nx.jpg,-4\n").contains("not between 0 and 130"));
    }
}
