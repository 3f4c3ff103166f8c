//! `[telemetry]`: the broker, the unit's identity on it, and the link's limits.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::settings::{in_range, KeyError};

/// `[telemetry]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    /// `mqtt://host[:port]` (1883 by default) or `mqtts://host[:port]` (TLS, 8883).
    pub broker: String,
    /// mqtts: the PEM certificate(s) of the CA that signed the broker's certificate.
    pub ca_file: Option<PathBuf>,
    /// mqtts: a client certificate and its key (PEM), for brokers that ask for one.
    pub client_cert: Option<PathBuf>,
    pub client_key: Option<PathBuf>,
    pub device_id: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub interval_s: Option<u64>,
    /// Messages held while the broker is unreachable.
    pub queue: Option<usize>,
    /// The longest wait between two connection attempts.
    pub reconnect_max_ms: Option<u64>,
    /// Whether a `policy/set` message may replace the board's `[policy]` (off by default:
    /// whoever may publish on the broker could then change what the gate allows).
    pub remote_policy: Option<bool>,
}

/// The files of an `mqtts://` connection.
#[derive(Debug, Clone, PartialEq)]
pub struct TlsFiles {
    pub ca_file: PathBuf,
    pub client: Option<(PathBuf, PathBuf)>,
}

/// A validated `[telemetry]`.
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetrySettings {
    pub host: String,
    pub port: u16,
    /// `None`: plain MQTT.
    pub tls: Option<TlsFiles>,
    pub device_id: String,
    pub username: Option<String>,
    pub password_file: Option<PathBuf>,
    pub interval: Duration,
    pub queue: usize,
    pub reconnect_max: Duration,
    pub remote_policy: bool,
}

impl TelemetrySettings {
    /// `base` resolves a relative `password_file`.
    pub fn from_raw(raw: RawTelemetry, base: &std::path::Path) -> Result<Self, KeyError> {
        let (host, port, tls) = parse_broker(&raw.broker)?;
        let existing = |key: &str, p: &Option<PathBuf>| -> Result<Option<PathBuf>, KeyError> {
            let Some(p) = p else { return Ok(None) };
            let full = base.join(p);
            if !tls {
                return Err(KeyError::new(
                    key,
                    "given for an mqtt:// broker (it is for mqtts://)",
                ));
            }
            if full.is_file() {
                Ok(Some(full))
            } else {
                Err(KeyError::new(
                    key,
                    format!("no such file: {}", full.display()),
                ))
            }
        };
        let ca_file = existing("telemetry.ca_file", &raw.ca_file)?;
        let client_cert = existing("telemetry.client_cert", &raw.client_cert)?;
        let client_key = existing("telemetry.client_key", &raw.client_key)?;
        let tls =
            match (tls, ca_file) {
                (false, _) => None,
                (true, None) => return Err(KeyError::new(
                    "telemetry.ca_file",
                    "missing: an mqtts:// broker needs the CA that signed its certificate (PEM)",
                )),
                (true, Some(ca_file)) => Some(TlsFiles {
                    ca_file,
                    client: match (client_cert, client_key) {
                        (Some(cert), Some(key)) => Some((cert, key)),
                        (None, None) => None,
                        (Some(_), None) => {
                            return Err(KeyError::new(
                                "telemetry.client_key",
                                "missing: give it with client_cert",
                            ))
                        }
                        (None, Some(_)) => {
                            return Err(KeyError::new(
                                "telemetry.client_cert",
                                "missing: give it with client_key",
                            ))
                        }
                    },
                }),
            };
        let id_ok = !raw.device_id.is_empty()
            && raw.device_id.len() <= 64
            && raw
                .device_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b));
        if !id_ok {
            return Err(KeyError::new(
                "telemetry.device_id",
                format!(
                    "`{}`: give 1 to 64 letters, digits, `.`, `_` or `-` (it is a topic level)",
                    raw.device_id
                ),
            ));
        }
        if raw.password_file.is_some() && raw.username.is_none() {
            return Err(KeyError::new(
                "telemetry.password_file",
                "given without telemetry.username",
            ));
        }
        let password_file = raw.password_file.map(|p| base.join(p));
        if let Some(p) = &password_file {
            if !p.is_file() {
                return Err(KeyError::new(
                    "telemetry.password_file",
                    format!("no such file: {}", p.display()),
                ));
            }
        }
        Ok(Self {
            host,
            port,
            tls,
            device_id: raw.device_id,
            username: raw.username,
            password_file,
            interval: Duration::from_secs(in_range(
                "telemetry.interval_s",
                raw.interval_s.unwrap_or(60),
                1..=86_400,
            )?),
            queue: in_range(
                "telemetry.queue",
                raw.queue.unwrap_or(10_000),
                16..=1_000_000,
            )?,
            reconnect_max: Duration::from_millis(in_range(
                "telemetry.reconnect_max_ms",
                raw.reconnect_max_ms.unwrap_or(30_000),
                100..=600_000,
            )?),
            remote_policy: raw.remote_policy.unwrap_or(false),
        })
    }

    pub fn topic(&self, leaf: &str) -> String {
        format!("agegate/{}/{leaf}", self.device_id)
    }
}

/// `(host, port, tls)` of `mqtt://host[:port]` or `mqtts://host[:port]`.
fn parse_broker(url: &str) -> Result<(String, u16, bool), KeyError> {
    let bad = |why: &str| KeyError::new("telemetry.broker", format!("`{url}`: {why}"));
    let (rest, tls, default_port) = if let Some(rest) = url.strip_prefix("mqtts://") {
        (rest, true, 8883)
    } else if let Some(rest) = url.strip_prefix("mqtt://") {
        (rest, false, 1883)
    } else {
        return Err(bad("give mqtt://host[:port] or mqtts://host[:port]"));
    };
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .ok()
                .filter(|p| *p > 0)
                .ok_or_else(|| bad("the port is not 1 to 65535"))?,
        ),
        None => (rest, default_port),
    };
    if host.is_empty() || host.contains(['/', '@', ' ']) {
        return Err(bad("no host"));
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port, tls))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn raw(broker: &str, device_id: &str) -> RawTelemetry {
        RawTelemetry {
            broker: broker.into(),
            ca_file: None,
            client_cert: None,
            client_key: None,
            device_id: device_id.into(),
            username: None,
            password_file: None,
            interval_s: None,
            queue: None,
            reconnect_max_ms: None,
            remote_policy: None,
        }
    }

    #[test]
    fn brokers_and_device_ids_are_checked_by_key() {
        let ok = TelemetrySettings::from_raw(raw("mqtt://10.0.0.2:1884", "kiosk-7"), "/".as_ref())
            .unwrap();
        assert_eq!((ok.host.as_str(), ok.port), ("10.0.0.2", 1884));
        assert_eq!(ok.topic("status"), "agegate/kiosk-7/status");
        let default_port =
            TelemetrySettings::from_raw(raw("mqtt://broker.local", "a"), "/".as_ref()).unwrap();
        assert_eq!(default_port.port, 1883);
        let err = |b: &str, id: &str| {
            TelemetrySettings::from_raw(raw(b, id), "/".as_ref())
                .unwrap_err()
                .to_string()
        };
        assert!(err("tcp://x", "a").contains("telemetry.broker"));
        assert!(err("mqtt://x:0", "a").contains("port"));
        assert!(err("mqtt://:1883", "a").contains("no host"));
        assert!(err("mqtts://x", "a").contains("telemetry.ca_file"));
        assert!(err("mqtt://x", "a/b").contains("telemetry.device_id"));
        assert!(err("mqtt://x", "#").contains("telemetry.device_id"));
        assert!(err("mqtt://x", "").contains("telemetry.device_id"));
    }
}
