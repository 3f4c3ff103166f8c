//! Actuate: the door relay and the three indicator LEDs, behind embedded-hal 1.0's
//! [`OutputPin`].
//!
//! [`Gate`] owns the lines. It drives every line inactive when it is made, energises the
//! relay only on ALLOW and only for the configured pulse, and drives it inactive again
//! on [`Gate::close`], on any write error and on drop. Time is passed in, so pulse
//! lengths are tested without sleeping.
//!
//! Backends, chosen by the board file (`[gpio] backend`), never by fallback:
//! `rppal` (Raspberry Pi 4 and earlier, BCM numbers), `cdev` (the GPIO character device,
//! lines requested **by name**: Pi 5, Jetson) and `log` (no hardware: every change is
//! only reported, for the dev board and tests).
//!
//! What drop cannot cover: a process killed with SIGKILL (or a watchdog kill) leaves a
//! line as it was. The relay is energised only for its pulse, and the installer section of
//! the README asks for a relay driver that is off when the pin floats or is an input.

#[cfg(feature = "cdev")]
mod cdev;
#[cfg(feature = "rpi")]
mod rpi;
mod settings;

pub use settings::{GpioBackend, GpioSettings, PinSpec, RawGpio};

use embedded_hal::digital::{ErrorType, OutputPin, PinState};

use crate::domain::Decision;

/// A GPIO error, naming the line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gpio line `{line}`: {message}")]
pub struct GpioError {
    pub line: String,
    pub message: String,
}

impl embedded_hal::digital::Error for GpioError {
    fn kind(&self) -> embedded_hal::digital::ErrorKind {
        embedded_hal::digital::ErrorKind::Other
    }
}

/// One output line, as the gate sees it: active or not. Any embedded-hal [`OutputPin`]
/// is one through [`HalLine`], which also applies the line's polarity.
pub trait OutputLine {
    fn set_active(&mut self, active: bool) -> Result<(), GpioError>;
}

/// An embedded-hal output pin with a name (for errors) and a polarity.
pub struct HalLine<P> {
    pin: P,
    name: String,
    active_low: bool,
}

impl<P: OutputPin> HalLine<P> {
    pub fn new(pin: P, name: impl Into<String>, active_low: bool) -> Self {
        Self {
            pin,
            name: name.into(),
            active_low,
        }
    }
}

impl<P: OutputPin> OutputLine for HalLine<P> {
    fn set_active(&mut self, active: bool) -> Result<(), GpioError> {
        let level = PinState::from(active != self.active_low);
        self.pin.set_state(level).map_err(|e| GpioError {
            line: self.name.clone(),
            message: format!("{e:?}"),
        })
    }
}

/// The `log` backend's pin: no hardware; the gate reports every change as an event.
#[derive(Debug, Default)]
pub struct LogPin;

impl ErrorType for LogPin {
    type Error = std::convert::Infallible;
}

impl OutputPin for LogPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        Ok(())
    }
}

/// The lines a gate drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LineRole {
    Relay,
    LedAllow,
    LedDeny,
    LedRefer,
}

impl LineRole {
    const ALL: [LineRole; 4] = [
        LineRole::Relay,
        LineRole::LedAllow,
        LineRole::LedDeny,
        LineRole::LedRefer,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

/// What the gate shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Indication {
    Decision(Decision),
    /// A fault: relay off, deny and refer LEDs on until the fault clears.
    Fault,
    /// Nothing to show: everything off.
    Idle,
}

/// A line changed level (reported to the audit log / `agegate run` output).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct PinChange {
    pub line: LineRole,
    pub active: bool,
}

/// The relay and LEDs. Every line starts inactive.
pub struct Gate {
    lines: [Option<Box<dyn OutputLine>>; 4],
    state: [bool; 4],
    pulse_ms: u64,
    /// When the relay and the decision LEDs go off again.
    until_ms: Option<u64>,
    changes: Vec<PinChange>,
}

impl Gate {
    /// `relay` and the optional LEDs (allow, deny, refer); `pulse_ms`: how long ALLOW
    /// energises the relay (and how long a decision's LED stays lit). Drives every line
    /// inactive now.
    pub fn new(
        relay: Box<dyn OutputLine>,
        leds: [Option<Box<dyn OutputLine>>; 3],
        pulse_ms: u64,
    ) -> Result<Self, GpioError> {
        let [allow, deny, refer] = leds;
        let mut gate = Self {
            lines: [Some(relay), allow, deny, refer],
            state: [false; 4],
            pulse_ms,
            until_ms: None,
            changes: Vec::with_capacity(16),
        };
        for role in LineRole::ALL {
            gate.write(role, false)?;
        }
        gate.changes.clear();
        Ok(gate)
    }

    /// Whether the relay is energised now.
    pub fn relay_active(&self) -> bool {
        self.state[LineRole::Relay.index()]
    }

    /// Line changes since the last call (for the event log), oldest first.
    pub fn drain_changes(&mut self) -> std::vec::Drain<'_, PinChange> {
        self.changes.drain(..)
    }

    fn write(&mut self, role: LineRole, active: bool) -> Result<(), GpioError> {
        let i = role.index();
        let Some(line) = self.lines[i].as_mut() else {
            return Ok(());
        };
        line.set_active(active)?;
        if self.state[i] != active {
            self.state[i] = active;
            self.changes.push(PinChange { line: role, active });
        }
        Ok(())
    }

    /// Shows `indication` from `now_ms`. ALLOW energises the relay for the pulse; any
    /// other indication drives it inactive first. On a write error the relay is driven
    /// inactive (best effort) and the error returned.
    pub fn show(&mut self, indication: Indication, now_ms: u64) -> Result<(), GpioError> {
        let result = self.apply(indication, now_ms);
        if result.is_err() {
            let _ = self.write(LineRole::Relay, false);
        }
        result
    }

    fn apply(&mut self, indication: Indication, now_ms: u64) -> Result<(), GpioError> {
        let (relay, allow, deny, refer) = match indication {
            Indication::Decision(Decision::Allow) => (true, true, false, false),
            Indication::Decision(Decision::Deny) => (false, false, true, false),
            Indication::Decision(Decision::Refer) => (false, false, false, true),
            Indication::Fault => (false, false, true, true),
            Indication::Idle => (false, false, false, false),
        };
        // Relay off before any LED, and on only after the LEDs are set.
        if !relay {
            self.write(LineRole::Relay, false)?;
        }
        self.write(LineRole::LedAllow, allow)?;
        self.write(LineRole::LedDeny, deny)?;
        self.write(LineRole::LedRefer, refer)?;
        if relay {
            self.write(LineRole::Relay, true)?;
        }
        self.until_ms = match indication {
            Indication::Decision(_) => Some(now_ms.saturating_add(self.pulse_ms)),
            Indication::Fault | Indication::Idle => None,
        };
        Ok(())
    }

    /// Ends the relay pulse and the decision LEDs once their time is up.
    pub fn poll(&mut self, now_ms: u64) -> Result<(), GpioError> {
        match self.until_ms {
            Some(until) if now_ms >= until => self.show(Indication::Idle, now_ms),
            _ => Ok(()),
        }
    }

    /// Relay off now (then the LEDs); used on shutdown and faults.
    pub fn close(&mut self) -> Result<(), GpioError> {
        self.until_ms = None;
        let relay = self.write(LineRole::Relay, false);
        let mut leds = Ok(());
        for role in [LineRole::LedAllow, LineRole::LedDeny, LineRole::LedRefer] {
            leds = leds.and(self.write(role, false));
        }
        relay.and(leds)
    }
}

/// Claims one line of a board's `[gpio]` section.
fn open_line(
    backend: GpioBackend,
    spec: &PinSpec,
    role: &str,
    active_low: bool,
) -> Result<Box<dyn OutputLine>, GpioError> {
    let unsupported = |what: &str| GpioError {
        line: role.to_string(),
        message: format!("this build has no {what} support (cargo feature)"),
    };
    match (backend, spec) {
        (GpioBackend::Log, _) => Ok(Box::new(HalLine::new(LogPin, role, active_low))),
        #[cfg(feature = "rpi")]
        (GpioBackend::Rppal, PinSpec::Bcm(bcm)) => rpi::output(*bcm, role, active_low),
        #[cfg(not(feature = "rpi"))]
        (GpioBackend::Rppal, PinSpec::Bcm(_)) => Err(unsupported("`rpi`")),
        #[cfg(feature = "cdev")]
        (GpioBackend::Cdev, PinSpec::Name(name)) => cdev::output(name, role, active_low),
        #[cfg(not(feature = "cdev"))]
        (GpioBackend::Cdev, PinSpec::Name(_)) => Err(unsupported("`cdev`")),
        _ => Err(unsupported("this pin form for the backend")),
    }
}

impl Gate {
    /// The gate a validated board describes; every line claimed and driven inactive.
    pub fn from_settings(settings: &GpioSettings) -> Result<Self, GpioError> {
        let relay = open_line(
            settings.backend,
            &settings.relay,
            "gpio.relay",
            settings.relay_active_low,
        )?;
        let mut leds: [Option<Box<dyn OutputLine>>; 3] = [None, None, None];
        for ((slot, spec), role) in leds.iter_mut().zip(&settings.leds).zip([
            "gpio.led_allow",
            "gpio.led_deny",
            "gpio.led_refer",
        ]) {
            if let Some(spec) = spec {
                *slot = Some(open_line(
                    settings.backend,
                    spec,
                    role,
                    settings.leds_active_low,
                )?);
            }
        }
        Gate::new(relay, leds, settings.relay_pulse_ms)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::error!("gate: could not drive the lines inactive on drop: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use embedded_hal_mock::eh1::digital::{Mock, State, Transaction};

    fn gate_with(relay: Mock, pulse_ms: u64) -> Gate {
        let relay = Box::new(HalLine::new(relay, "relay", false));
        Gate::new(relay, [None, None, None], pulse_ms).expect("gate")
    }

    #[test]
    fn allow_pulses_the_relay_then_drops_it() {
        let relay = Mock::new(&[
            Transaction::set(State::Low),  // start-up
            Transaction::set(State::High), // ALLOW at t=1000
            Transaction::set(State::Low),  // end of the 3 s pulse
            Transaction::set(State::Low),  // drop
        ]);
        let mut gate = gate_with(relay.clone(), 3000);
        gate.show(Indication::Decision(Decision::Allow), 1000)
            .expect("allow");
        assert!(gate.relay_active());
        gate.poll(3999).expect("poll");
        assert!(gate.relay_active());
        gate.poll(4000).expect("poll");
        assert!(!gate.relay_active());
        drop(gate);
        let mut relay = relay;
        relay.done();
    }

    #[test]
    fn deny_refer_and_fault_never_energise_the_relay() {
        let relay = Mock::new(&vec![Transaction::set(State::Low); 5]);
        let mut gate = gate_with(relay.clone(), 3000);
        gate.show(Indication::Decision(Decision::Deny), 0)
            .expect("deny");
        gate.show(Indication::Decision(Decision::Refer), 10)
            .expect("refer");
        gate.show(Indication::Fault, 20).expect("fault");
        drop(gate);
        let mut relay = relay;
        relay.done();
    }

    #[test]
    fn active_low_relay_is_inverted() {
        let relay = Mock::new(&[
            Transaction::set(State::High),
            Transaction::set(State::Low),
            Transaction::set(State::High),
        ]);
        let line = Box::new(HalLine::new(relay.clone(), "relay", true));
        let mut gate = Gate::new(line, [None, None, None], 100).expect("gate");
        gate.show(Indication::Decision(Decision::Allow), 0)
            .expect("allow");
        gate.close().expect("close");
        std::mem::forget(gate); // drop would write once more
        let mut relay = relay;
        relay.done();
    }

    #[test]
    fn a_failing_led_leaves_the_relay_off() {
        let relay = Mock::new(&[
            Transaction::set(State::Low),
            Transaction::set(State::Low), // best-effort off after the LED error
            Transaction::set(State::Low), // drop
        ]);
        let led = Mock::new(&[
            Transaction::set(State::Low),
            Transaction::set(State::High).with_error(embedded_hal_mock::eh1::MockError::Io(
                std::io::ErrorKind::Other,
            )),
            Transaction::set(State::Low),
        ]);
        let mut gate = Gate::new(
            Box::new(HalLine::new(relay.clone(), "relay", false)),
            [
                Some(Box::new(HalLine::new(led.clone(), "led_allow", false))),
                None,
                None,
            ],
            100,
        )
        .expect("gate");
        let err = gate.show(Indication::Decision(Decision::Allow), 0);
        assert!(err.is_err_and(|e| e.line == "led_allow"));
        assert!(!gate.relay_active());
        drop(gate);
        let (mut relay, mut led) = (relay, led);
        relay.done();
        led.done();
    }
}
