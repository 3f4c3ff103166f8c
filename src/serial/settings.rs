//! `[serial]`: the line to the host, or none.

use std::path::PathBuf;

use serde::Deserialize;

use crate::settings::{in_range, KeyError};

/// `[serial]` as written (paths already resolved against the board file's folder).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSerial {
    pub kind: SerialKind,
    pub path: Option<PathBuf>,
    pub baud: Option<u32>,
}

/// `[serial] kind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SerialKind {
    /// A UART or USB serial adapter.
    Port,
    /// No host line: the frames the device would send are only reported.
    None,
}

/// A validated `[serial]`.
#[derive(Debug, Clone, PartialEq)]
pub enum SerialSettings {
    None,
    Port { path: PathBuf, baud: u32 },
}

impl SerialSettings {
    pub fn from_raw(raw: RawSerial) -> Result<Self, KeyError> {
        match raw.kind {
            SerialKind::None => {
                if raw.path.is_some() || raw.baud.is_some() {
                    return Err(KeyError::new(
                        "serial.path",
                        "serial.kind is \"none\": remove path and baud",
                    ));
                }
                Ok(SerialSettings::None)
            }
            SerialKind::Port => {
                let Some(path) = raw.path else {
                    return Err(KeyError::new(
                        "serial.path",
                        "missing, e.g. \"/dev/ttyAMA0\"",
                    ));
                };
                if !path.exists() {
                    return Err(KeyError::new(
                        "serial.path",
                        format!("no such device: {}", path.display()),
                    ));
                }
                let baud = in_range(
                    "serial.baud",
                    raw.baud.unwrap_or(115_200),
                    1_200..=4_000_000,
                )?;
                Ok(SerialSettings::Port { path, baud })
            }
        }
    }
}
