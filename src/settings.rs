//! What every board-file section's validation returns on a bad value: the key, spelled as
//! the board file spells it, and what is wrong with it. Each subsystem validates its own
//! section (`Settings::from_raw`); `config` only names the file.

/// A bad value in a board file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("key `{key}`: {message}")]
pub struct KeyError {
    /// `section.key`, e.g. `capture.fps`.
    pub key: String,
    pub message: String,
}

impl KeyError {
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

/// `value` if it lies in `range`, else an error naming `key` and the range.
pub(crate) fn in_range<T>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
) -> Result<T, KeyError>
where
    T: PartialOrd + std::fmt::Display + Copy,
{
    if range.contains(&value) {
        Ok(value)
    } else {
        Err(KeyError::new(
            key,
            format!("{value}: give {} to {}", range.start(), range.end()),
        ))
    }
}
