//! `[mdb]`: the vending machine's bus, how agegate reaches it, and who it says it is there.

use std::path::PathBuf;

use serde::Deserialize;

use super::avd::{AvdSettings, DravpAnswer, Identity};
use crate::settings::{in_range, KeyError};

/// `[mdb]` as written (paths already resolved against the board file's folder).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawMdb {
    pub transport: TransportKind,
    /// `transport = "uart"`: the UART the MDB interface board is wired to.
    pub device: Option<PathBuf>,
    /// `transport = "stream"`: a character device (a pty, a USB bridge) or a Unix socket
    /// path agegate listens on.
    pub path: Option<PathBuf>,
    pub dravp_answer: Option<DravpAnswerKey>,
    /// The EXPANSION REQUEST ID fields: printable ASCII, at most 3, 12 and 12 characters.
    pub manufacturer: Option<String>,
    pub serial_number: Option<String>,
    pub model: Option<String>,
    /// Seconds the VMC keeps retrying before it declares the AVD missing (SETUP answer).
    pub non_response_s: Option<u8>,
    /// Real-time priority (SCHED_FIFO, 1 to 99) for the bus thread; refused quietly where
    /// the process may not have it.
    pub sched_fifo_priority: Option<u8>,
}

/// `[mdb] transport`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TransportKind {
    /// The 9-bit bus on a UART, the mode bit carried by mark/space parity.
    Uart,
    /// Two bytes a word (mode bit, data) over a pty, a USB bridge or a Unix socket.
    Stream,
}

/// `[mdb] dravp_answer`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DravpAnswerKey {
    NextPoll,
    Immediate,
}

/// Where the bus is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TransportSettings {
    Uart { device: PathBuf },
    Stream { path: PathBuf },
}

/// A validated `[mdb]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdbSettings {
    pub transport: TransportSettings,
    /// The AVD itself; its `min_request_age` is the board policy's floor, set by
    /// [`MdbSettings::with_floor`].
    pub avd: AvdSettings,
    pub sched_fifo_priority: Option<u8>,
}

/// The software version as two BCD bytes: major, minor (`0.1.x` is `00 01`).
fn software_version() -> [u8; 2] {
    let part = |s: &str| s.parse::<u8>().map_or(0, |v| v % 100);
    let mut parts = env!("CARGO_PKG_VERSION").split('.');
    let bcd = |v: u8| ((v / 10) << 4) | (v % 10);
    let major = part(parts.next().unwrap_or("0"));
    let minor = part(parts.next().unwrap_or("0"));
    [bcd(major), bcd(minor)]
}

impl MdbSettings {
    pub fn from_raw(raw: RawMdb) -> Result<Self, KeyError> {
        let transport = match (raw.transport, raw.device, raw.path) {
            (TransportKind::Uart, Some(device), None) => TransportSettings::Uart { device },
            (TransportKind::Stream, None, Some(path)) => TransportSettings::Stream { path },
            (TransportKind::Uart, _, Some(_)) => {
                return Err(KeyError::new(
                    "mdb.path",
                    "is for transport = \"stream\"; a UART is named by mdb.device",
                ))
            }
            (TransportKind::Stream, Some(_), _) => {
                return Err(KeyError::new(
                    "mdb.device",
                    "is for transport = \"uart\"; a stream is named by mdb.path",
                ))
            }
            (TransportKind::Uart, None, None) => {
                return Err(KeyError::new(
                    "mdb.device",
                    "missing, e.g. \"/dev/serial0\"",
                ))
            }
            (TransportKind::Stream, None, None) => {
                return Err(KeyError::new(
                    "mdb.path",
                    "missing: a pty or USB bridge, or a Unix socket path to listen on",
                ))
            }
        };
        let defaults = AvdSettings::default();
        let text = |v: &Option<String>, default: &str| v.clone().unwrap_or(default.into());
        let manufacturer = text(&raw.manufacturer, "AGG");
        let serial = text(&raw.serial_number, "000000000000");
        let model = text(&raw.model, "agegate");
        let identity =
            Identity::new(&manufacturer, &serial, &model, software_version()).map_err(|e| {
                let key = match e {
                    super::MdbError::BadLength { what, .. }
                    | super::MdbError::BadValue { field: what, .. } => match what {
                        "manufacturer" => "mdb.manufacturer",
                        "serial" => "mdb.serial_number",
                        _ => "mdb.model",
                    },
                    _ => "mdb.model",
                };
                KeyError::new(key, format!("{e} (printable ASCII: 3, 12 and 12 at most)"))
            })?;
        let non_response_s = in_range(
            "mdb.non_response_s",
            raw.non_response_s.unwrap_or(defaults.non_response_s),
            1..=255,
        )?;
        let sched_fifo_priority = raw
            .sched_fifo_priority
            .map(|p| in_range("mdb.sched_fifo_priority", p, 1..=99))
            .transpose()?;
        Ok(Self {
            transport,
            avd: AvdSettings {
                non_response_s,
                identity,
                dravp_answer: match raw.dravp_answer.unwrap_or(DravpAnswerKey::NextPoll) {
                    DravpAnswerKey::NextPoll => DravpAnswer::NextPoll,
                    DravpAnswerKey::Immediate => DravpAnswer::Immediate,
                },
                ..defaults
            },
            sched_fifo_priority,
        })
    }

    /// The AVD verifies no required age under the policy's `min_request_age` (a DRAVP
    /// below it is raised to it, as a serial REQUEST below it is refused).
    pub fn with_floor(mut self, min_request_age: f32) -> Self {
        self.avd.min_request_age = min_request_age.ceil().clamp(1.0, 254.0) as u8;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(text: &str) -> Result<MdbSettings, String> {
        let raw: RawMdb = toml::from_str(text).map_err(|e| e.to_string())?;
        MdbSettings::from_raw(raw).map_err(|e| e.to_string())
    }

    #[test]
    fn a_uart_board_and_its_defaults() {
        let s = raw("transport = \"uart\"\ndevice = \"/dev/serial0\"\nserial_number = \"K-0042\"")
            .expect("valid");
        assert_eq!(
            s.transport,
            TransportSettings::Uart {
                device: "/dev/serial0".into()
            }
        );
        assert_eq!(s.avd.dravp_answer, DravpAnswer::NextPoll);
        assert_eq!(s.avd.non_response_s, 5);
        assert_eq!(s.sched_fifo_priority, None);
        assert_eq!(s.with_floor(18.0).avd.min_request_age, 18);
    }

    #[test]
    fn bad_keys_are_named() {
        let cases = [
            ("transport = \"uart\"", "mdb.device"),
            ("transport = \"stream\"", "mdb.path"),
            ("transport = \"uart\"\npath = \"/tmp/x\"", "mdb.path"),
            ("transport = \"stream\"\ndevice = \"/dev/x\"", "mdb.device"),
            (
                "transport = \"uart\"\ndevice = \"/d\"\nserial_number = \"0123456789ABC\"",
                "mdb.serial_number",
            ),
            (
                "transport = \"uart\"\ndevice = \"/d\"\nmanufacturer = \"é\"",
                "mdb.manufacturer",
            ),
            (
                "transport = \"uart\"\ndevice = \"/d\"\nsched_fifo_priority = 0",
                "mdb.sched_fifo_priority",
            ),
            (
                "transport = \"uart\"\ndevice = \"/d\"\nnon_response_s = 0",
                "mdb.non_response_s",
            ),
        ];
        for (text, key) in cases {
            let err = raw(text).expect_err(text);
            assert!(err.contains(key), "{text}: {err}");
        }
        let err = raw("transport = \"can\"\ndevice = \"/d\"").expect_err("unknown transport");
        assert!(err.contains("uart") && err.contains("stream"), "{err}");
    }

    #[test]
    fn the_version_is_bcd() {
        let [major, minor] = software_version();
        assert!(major >> 4 <= 9 && major & 0xF <= 9 && minor >> 4 <= 9 && minor & 0xF <= 9);
    }
}
