//! Raspberry Pi GPIO through `rppal` (its embedded-hal 1.0 pins), by BCM number. For the
//! Pi 4 and earlier; on the Pi 5 use the `cdev` backend (the RP1 chip's lines by name).

use super::{GpioError, HalLine, OutputLine};

/// Claims BCM pin `bcm` as an output, inactive. rppal resets the pin to its previous
/// mode when the pin is dropped (an input: the relay driver's pull-down turns it off).
pub fn output(bcm: u8, name: &str, active_low: bool) -> Result<Box<dyn OutputLine>, GpioError> {
    let err = |e: rppal::gpio::Error| GpioError {
        line: name.to_string(),
        message: format!("BCM {bcm}: {e}"),
    };
    let gpio = rppal::gpio::Gpio::new().map_err(err)?;
    let pin = gpio.get(bcm).map_err(err)?;
    // Start at the inactive level, without a glitch through the active one.
    let pin = if active_low {
        pin.into_output_high()
    } else {
        pin.into_output_low()
    };
    Ok(Box::new(HalLine::new(pin, name, active_low)))
}
