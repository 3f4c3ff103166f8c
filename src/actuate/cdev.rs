//! GPIO through the Linux GPIO character device (`gpiocdev`), lines requested **by
//! name**: Raspberry Pi 5 kernels renumbered the chips (the header is on RP1, `gpiochip4`
//! or `gpiochip0` depending on the kernel), and Jetson lines are only stable by name. The
//! kernel releases the line when the request is dropped.

use embedded_hal::digital::{ErrorType, OutputPin};
use gpiocdev::line::Value;
use gpiocdev::request::Request;

use super::{GpioError, HalLine, OutputLine};

/// A requested output line.
pub struct CdevPin {
    request: Request,
    name: String,
}

impl ErrorType for CdevPin {
    type Error = GpioError;
}

impl CdevPin {
    fn set(&mut self, value: Value) -> Result<(), GpioError> {
        self.request.set_lone_value(value).map_err(|e| GpioError {
            line: self.name.clone(),
            message: e.to_string(),
        })
    }
}

impl OutputPin for CdevPin {
    fn set_low(&mut self) -> Result<(), Self::Error> {
        self.set(Value::Inactive)
    }
    fn set_high(&mut self) -> Result<(), Self::Error> {
        self.set(Value::Active)
    }
}

/// Requests the line named `line_name` (as `gpioinfo` lists it) as an output, at the
/// inactive level. Polarity is applied by [`HalLine`], so the kernel sees raw levels.
pub fn output(
    line_name: &str,
    role: &str,
    active_low: bool,
) -> Result<Box<dyn OutputLine>, GpioError> {
    let err = |message: String| GpioError {
        line: role.to_string(),
        message,
    };
    let found = gpiocdev::find_named_line(line_name).ok_or_else(|| {
        err(format!(
            "no GPIO line named `{line_name}` on any /dev/gpiochip* (see `gpioinfo`)"
        ))
    })?;
    let inactive = if active_low {
        Value::Active
    } else {
        Value::Inactive
    };
    let request = Request::builder()
        .with_found_line(&found)
        .with_consumer("agegate")
        .as_output(inactive)
        .request()
        .map_err(|e| {
            err(format!(
                "line `{line_name}` on {}: {e}",
                found.chip.display()
            ))
        })?;
    let pin = CdevPin {
        request,
        name: role.to_string(),
    };
    Ok(Box::new(HalLine::new(pin, role, active_low)))
}
