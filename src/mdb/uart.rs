//! The `uart` transport: the MDB bus on a UART (a Raspberry Pi's `/dev/serial0` behind an
//! MDB interface board), 9600 baud, 8 data bits and the mode bit carried by the parity bit.
//!
//! termios can fix the parity bit at mark (1) or space (0) with `PARENB | CMSPAR`
//! (`PARODD` picks mark), which `serialport` cannot set, so this talks termios itself.
//! * **Receive** with space parity, `INPCK | PARMRK`: a word whose mode bit is set (the
//!   VMC's address byte) fails the parity check and arrives marked `FF 00 xx`; a data
//!   byte FFh arrives doubled `FF FF`; a break (the bus reset) arrives as `FF 00 00`
//!   (address byte 00h with the mode bit would read the same, and no VMC sends it).
//! * **Send** each run of words with one mode bit at the parity that writes it (mark for
//!   the block's last word), the UART drained before the parity changes, then back to
//!   space for receiving.
//!
//! Bytes are stamped when read, not when they arrived: a thread descheduled for longer
//! than t-response answers late, and the link then stays silent (docs/mdb.md "Timing").

use std::fs::File;
use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::sys::termios::{
    cfmakeraw, cfsetspeed, tcdrain, tcgetattr, tcsetattr, BaudRate, ControlFlags, InputFlags,
    SetArg, Termios,
};

use super::stream::{readable, write_all_within};
use super::transport::{BusClock, Heard, Transport, TransportError};
use super::{Micros, Word};

/// Undoes `PARMRK`'s marking: see the module's text.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ParmrkDecoder {
    #[default]
    Plain,
    /// FFh seen.
    Escape,
    /// FF 00 seen: the next byte had a parity error (or it is a break).
    Marked,
}

impl ParmrkDecoder {
    /// What byte `b` completes; `None` while a marking is in progress.
    pub(crate) fn byte(&mut self, b: u8, at: super::Micros, out: &mut Vec<Heard>) {
        *self = match (*self, b) {
            (Self::Plain, 0xFF) => Self::Escape,
            (Self::Plain, b) => {
                out.push(Heard::Word(Word::data(b), at));
                Self::Plain
            }
            (Self::Escape, 0xFF) => {
                out.push(Heard::Word(Word::data(0xFF), at));
                Self::Plain
            }
            (Self::Escape, 0x00) => Self::Marked,
            (Self::Escape, b) => {
                // Not a sequence PARMRK makes: count it, read on from this byte.
                out.push(Heard::Noise);
                return self.restart(b, at, out);
            }
            (Self::Marked, 0x00) => {
                out.push(Heard::BusReset);
                Self::Plain
            }
            (Self::Marked, b) => {
                out.push(Heard::Word(Word::with_mode(b), at));
                Self::Plain
            }
        };
    }

    fn restart(&mut self, b: u8, at: super::Micros, out: &mut Vec<Heard>) {
        *self = Self::Plain;
        self.byte(b, at, out);
    }
}

/// A block's words as runs of one mode bit: (mark parity, the bytes).
pub(crate) fn parity_runs(words: &[Word]) -> impl Iterator<Item = (bool, Vec<u8>)> + '_ {
    words.chunk_by(|a, b| a.mode == b.mode).map(|run| {
        (
            run.first().is_some_and(|w| w.mode),
            run.iter().map(|w| w.data).collect(),
        )
    })
}

pub struct UartTransport {
    device: PathBuf,
    name: String,
    file: Option<File>,
    decoder: ParmrkDecoder,
    clock: BusClock,
}

/// A block of 36 words takes 41 ms at 9600 baud; room for it and a slow driver.
const SEND_PATIENCE: Duration = Duration::from_millis(100);

fn set_parity(termios: &mut Termios, mark: bool) {
    termios.control_flags.set(ControlFlags::PARODD, mark);
}

impl UartTransport {
    pub fn open(device: &Path, clock: BusClock) -> Result<Self, TransportError> {
        let mut t = Self {
            device: device.to_path_buf(),
            name: format!("uart {}", device.display()),
            file: None,
            decoder: ParmrkDecoder::default(),
            clock,
        };
        t.reopen()?;
        Ok(t)
    }

    fn configure(&self, file: &File) -> Result<(), TransportError> {
        let err = |e: nix::errno::Errno| TransportError::new(&self.name, e);
        let fd = file.as_raw_fd();
        let mut t = tcgetattr(fd).map_err(err)?;
        cfmakeraw(&mut t);
        cfsetspeed(&mut t, BaudRate::B9600).map_err(err)?;
        t.control_flags.remove(ControlFlags::CSIZE);
        t.control_flags
            .remove(ControlFlags::CSTOPB | ControlFlags::CRTSCTS);
        t.control_flags.insert(
            ControlFlags::CS8
                | ControlFlags::PARENB
                | ControlFlags::CMSPAR
                | ControlFlags::CREAD
                | ControlFlags::CLOCAL,
        );
        set_parity(&mut t, false);
        t.input_flags.remove(
            InputFlags::IGNPAR
                | InputFlags::ISTRIP
                | InputFlags::IGNBRK
                | InputFlags::BRKINT
                | InputFlags::IXON
                | InputFlags::IXOFF,
        );
        t.input_flags.insert(InputFlags::INPCK | InputFlags::PARMRK);
        tcsetattr(fd, SetArg::TCSANOW, &t).map_err(err)
    }

    fn lost(&mut self, e: impl std::fmt::Display) -> TransportError {
        self.file = None;
        TransportError::new(&self.name, e)
    }
}

impl Transport for UartTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn receive(&mut self, wait: Duration, into: &mut Vec<Heard>) -> Result<Micros, TransportError> {
        let Some(file) = self.file.as_mut() else {
            return Err(TransportError::new(&self.name, "closed"));
        };
        let mut buf = [0u8; 128];
        let ready = readable(file.as_raw_fd(), wait);
        // After the wait, before the read: whatever arrived by then is in this read.
        let known = self.clock.now();
        let n = match ready {
            Ok(false) => return Ok(known),
            Ok(true) => match file.read(&mut buf) {
                Ok(0) => return Err(self.lost("hung up")),
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(known),
                Err(e) => return Err(self.lost(e)),
            },
            Err(e) => return Err(self.lost(e)),
        };
        let now = self.clock.now();
        for b in buf.get(..n).unwrap_or_default() {
            self.decoder.byte(*b, now, into);
        }
        Ok(known)
    }

    fn send(&mut self, words: &[Word]) -> Result<(), TransportError> {
        let Some(file) = self.file.as_mut() else {
            return Err(TransportError::new(&self.name, "closed"));
        };
        let fd = file.as_raw_fd();
        let result = (|| -> Result<(), String> {
            let mut t = tcgetattr(fd).map_err(|e| e.to_string())?;
            for (mark, bytes) in parity_runs(words) {
                set_parity(&mut t, mark);
                // TCSADRAIN: the bytes before go out with the parity they were written for.
                tcsetattr(fd, SetArg::TCSADRAIN, &t).map_err(|e| e.to_string())?;
                write_all_within(file, fd, &bytes, SEND_PATIENCE).map_err(|e| e.to_string())?;
            }
            tcdrain(fd).map_err(|e| e.to_string())?;
            set_parity(&mut t, false);
            tcsetattr(fd, SetArg::TCSANOW, &t).map_err(|e| e.to_string())
        })();
        result.map_err(|e| self.lost(e))
    }

    fn reopen(&mut self) -> Result<(), TransportError> {
        self.file = None;
        self.decoder = ParmrkDecoder::default();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
            .open(&self.device)
            .map_err(|e| TransportError::new(&self.name, e))?;
        self.configure(&file)?;
        self.file = Some(file);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(bytes: &[u8]) -> Vec<Heard> {
        let mut d = ParmrkDecoder::default();
        let mut out = Vec::new();
        for b in bytes {
            d.byte(*b, Micros(7), &mut out);
        }
        out
    }

    #[test]
    fn parmrk_marks_the_mode_bit_doubles_ffh_and_flags_a_break() {
        let w = |data, mode| Heard::Word(Word { data, mode }, Micros(7));
        // POLL 6Ah with the mode bit, its checksum 6Ah without.
        assert_eq!(
            decode(&[0xFF, 0x00, 0x6A, 0x6A]),
            vec![w(0x6A, true), w(0x6A, false)]
        );
        assert_eq!(
            decode(&[0xFF, 0xFF, 0x12]),
            vec![w(0xFF, false), w(0x12, false)]
        );
        assert_eq!(decode(&[0xFF, 0x00, 0x00]), vec![Heard::BusReset]);
        // FF then a byte PARMRK never puts there: noise, and the byte is read on its own.
        assert_eq!(decode(&[0xFF, 0x41]), vec![Heard::Noise, w(0x41, false)]);
        assert_eq!(
            decode(&[0xFF, 0x07, 0xFF]),
            vec![Heard::Noise, w(0x07, false)]
        );
    }

    #[test]
    fn a_block_goes_out_in_parity_runs() {
        let words = [Word::data(0x00), Word::data(0x01), Word::with_mode(0x01)];
        let runs: Vec<_> = parity_runs(&words).collect();
        assert_eq!(runs, vec![(false, vec![0x00, 0x01]), (true, vec![0x01])]);
        let ack: Vec<_> = parity_runs(&[Word::with_mode(0x00)]).collect();
        assert_eq!(ack, vec![(true, vec![0x00])]);
    }

    #[test]
    fn on_a_pty_the_line_is_set_to_mark_space_parity_and_bytes_go_out() {
        use serialport::SerialPort;
        let (mut master, slave) = serialport::TTYPort::pair().expect("pty pair");
        let path = PathBuf::from(slave.name().expect("pty name"));
        let mut t = UartTransport::open(&path, BusClock::default()).expect("open");
        let file = t.file.as_ref().expect("open file");
        let attrs = tcgetattr(file.as_raw_fd()).expect("tcgetattr");
        let set = |f| attrs.control_flags.contains(f);
        // A pty keeps CMSPAR but its driver clears PARENB (drivers/tty/pty.c forces 8N1):
        // the parity itself needs a real UART.
        assert!(set(ControlFlags::CMSPAR) && set(ControlFlags::CS8));
        assert!(!set(ControlFlags::PARODD), "receives with space parity");
        assert!(attrs
            .input_flags
            .contains(InputFlags::INPCK | InputFlags::PARMRK));
        t.send(&[Word::data(0x00), Word::with_mode(0x00)])
            .expect("send");
        let attrs = tcgetattr(t.file.as_ref().expect("open").as_raw_fd()).expect("tcgetattr");
        assert!(
            !attrs.control_flags.contains(ControlFlags::PARODD),
            "back to space"
        );
        master.set_timeout(Duration::from_secs(2)).expect("timeout");
        let mut got = [0u8; 2];
        master.read_exact(&mut got).expect("read");
        assert_eq!(got, [0x00, 0x00]);
    }
}
