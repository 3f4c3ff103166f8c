//! The physical line to the host: a [`HostLink`] moves bytes; framing is [`super::Decoder`]
//! and [`super::Message`]'s job.
//!
//! [`SerialLink`] is a UART or USB serial adapter through `serialport` (without libudev).
//! Reads never block: the frame loop polls the line once per frame. A line that hangs up
//! (USB adapter unplugged, the host's end of a pty closed) is [`LinkError::Lost`]; the
//! daemon closes the gate and calls [`HostLink::reopen`] with backoff.

use std::io::{Read, Write};
use std::path::PathBuf;
use std::time::Duration;

use serialport::{SerialPort, TTYPort};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkError {
    #[error("serial line {name}: {message}")]
    Lost { name: String, message: String },
}

/// A byte pipe to the host.
pub trait HostLink {
    fn name(&self) -> &str;
    /// Whatever has arrived, without waiting: `Ok(0)` when nothing has.
    fn read_available(&mut self, buf: &mut [u8]) -> Result<usize, LinkError>;
    /// Sends one encoded frame.
    fn write_frame(&mut self, frame: &[u8]) -> Result<(), LinkError>;
    /// Tries to get the line back after [`LinkError::Lost`].
    fn reopen(&mut self) -> Result<(), LinkError>;
}

/// A serial port: a device path and a baud rate, 8N1, no flow control.
pub struct SerialLink {
    path: Option<PathBuf>,
    baud: u32,
    name: String,
    port: Option<TTYPort>,
}

/// How long a frame write may wait for the UART: a 37-byte frame takes 3 ms at 115200.
const WRITE_TIMEOUT: Duration = Duration::from_millis(200);

impl SerialLink {
    pub fn open(path: PathBuf, baud: u32) -> Result<Self, LinkError> {
        let mut link = Self {
            name: path.display().to_string(),
            path: Some(path),
            baud,
            port: None,
        };
        link.reopen()?;
        Ok(link)
    }

    /// Wraps an already open port (a pty in tests); it cannot be reopened.
    pub fn from_port(port: TTYPort, name: impl Into<String>) -> Self {
        Self {
            path: None,
            baud: 0,
            name: name.into(),
            port: Some(port),
        }
    }

    fn lost(&mut self, message: impl std::fmt::Display) -> LinkError {
        self.port = None;
        LinkError::Lost {
            name: self.name.clone(),
            message: message.to_string(),
        }
    }
}

impl HostLink for SerialLink {
    fn name(&self) -> &str {
        &self.name
    }

    fn read_available(&mut self, buf: &mut [u8]) -> Result<usize, LinkError> {
        let Some(port) = self.port.as_mut() else {
            return Err(self.lost("not open"));
        };
        if let Err(e) = port.set_timeout(Duration::ZERO) {
            return Err(self.lost(e));
        }
        match port.read(buf) {
            // poll said readable and read found nothing: the other end hung up
            Ok(0) => Err(self.lost("hung up")),
            Ok(n) => Ok(n),
            Err(e) if e.kind() == std::io::ErrorKind::TimedOut => Ok(0),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => Ok(0),
            Err(e) => Err(self.lost(e)),
        }
    }

    fn write_frame(&mut self, frame: &[u8]) -> Result<(), LinkError> {
        let Some(port) = self.port.as_mut() else {
            return Err(self.lost("not open"));
        };
        let result = port
            .set_timeout(WRITE_TIMEOUT)
            .map_err(std::io::Error::from)
            .and_then(|()| port.write_all(frame))
            .and_then(|()| port.flush());
        result.map_err(|e| self.lost(format!("write failed: {e}")))
    }

    fn reopen(&mut self) -> Result<(), LinkError> {
        let Some(path) = self.path.clone() else {
            return Err(self.lost("this line cannot be reopened"));
        };
        let port = serialport::new(path.to_string_lossy(), self.baud)
            .timeout(Duration::ZERO)
            .open_native()
            .map_err(|e| self.lost(e))?;
        // Bytes that queued while no one listened belong to a session that is gone.
        let _ = port.clear(serialport::ClearBuffer::All);
        self.port = Some(port);
        Ok(())
    }
}
