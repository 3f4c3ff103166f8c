//! `[gpio]`: which backend drives the relay and the LEDs, on which lines.

use serde::Deserialize;

use crate::settings::{in_range, KeyError};

/// `[gpio]` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGpio {
    pub backend: GpioBackend,
    pub relay: String,
    #[serde(default)]
    pub relay_active_low: bool,
    pub relay_pulse_ms: Option<u64>,
    pub led_allow: Option<String>,
    pub led_deny: Option<String>,
    pub led_refer: Option<String>,
    #[serde(default)]
    pub leds_active_low: bool,
}

/// `[gpio] backend`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum GpioBackend {
    /// Raspberry Pi 4 and earlier, BCM numbers (cargo feature `rpi`).
    Rppal,
    /// The GPIO character device, lines by name: Pi 5, Jetson (cargo feature `cdev`).
    Cdev,
    /// No hardware: every change is only reported.
    Log,
}

/// A GPIO line: a BCM number for `rppal`, a line name for `cdev` and `log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PinSpec {
    Bcm(u8),
    Name(String),
}

/// The longest GPIO line name: the kernel's `GPIO_MAX_NAME_SIZE` (32) less its NUL, so
/// a longer name can never match a line.
const MAX_LINE_NAME_BYTES: usize = 31;

/// A validated `[gpio]`.
#[derive(Debug, Clone, PartialEq)]
pub struct GpioSettings {
    pub backend: GpioBackend,
    pub relay: PinSpec,
    pub relay_active_low: bool,
    pub relay_pulse_ms: u64,
    /// allow, deny, refer
    pub leds: [Option<PinSpec>; 3],
    pub leds_active_low: bool,
}

impl GpioSettings {
    pub fn from_raw(raw: RawGpio) -> Result<Self, KeyError> {
        let backend = raw.backend;
        let pin = |key: &str, text: &str| -> Result<PinSpec, KeyError> {
            match backend {
                // BCM 0..=27 are the 40-pin header's GPIOs.
                GpioBackend::Rppal => match text.trim().parse::<u8>() {
                    Ok(n) if n <= 27 => Ok(PinSpec::Bcm(n)),
                    _ => Err(KeyError::new(
                        key,
                        format!("`{text}`: rppal takes a BCM GPIO number, 0 to 27"),
                    )),
                },
                GpioBackend::Cdev | GpioBackend::Log => {
                    if text.trim().is_empty() {
                        Err(KeyError::new(key, "empty line name (see `gpioinfo`)"))
                    } else if text.trim().len() > MAX_LINE_NAME_BYTES {
                        Err(KeyError::new(
                            key,
                            format!(
                                "{} bytes: a GPIO line name has at most {MAX_LINE_NAME_BYTES} \
                                 (see `gpioinfo`)",
                                text.trim().len()
                            ),
                        ))
                    } else {
                        Ok(PinSpec::Name(text.trim().to_string()))
                    }
                }
            }
        };
        let relay = pin("gpio.relay", &raw.relay)?;
        let led =
            |key: &str, text: &Option<String>| text.as_deref().map(|t| pin(key, t)).transpose();
        let leds = [
            led("gpio.led_allow", &raw.led_allow)?,
            led("gpio.led_deny", &raw.led_deny)?,
            led("gpio.led_refer", &raw.led_refer)?,
        ];
        let mut seen = vec![("gpio.relay", &relay)];
        for (key, spec) in ["gpio.led_allow", "gpio.led_deny", "gpio.led_refer"]
            .into_iter()
            .zip(&leds)
        {
            if let Some(spec) = spec {
                if let Some((other, _)) = seen.iter().find(|(_, s)| *s == spec) {
                    return Err(KeyError::new(key, format!("same line as {other}")));
                }
                seen.push((key, spec));
            }
        }
        Ok(Self {
            backend,
            relay,
            relay_active_low: raw.relay_active_low,
            relay_pulse_ms: in_range(
                "gpio.relay_pulse_ms",
                raw.relay_pulse_ms.unwrap_or(3_000),
                100..=60_000,
            )?,
            leds,
            leds_active_low: raw.leds_active_low,
        })
    }
}
