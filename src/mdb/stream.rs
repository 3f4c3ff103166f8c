//! The `stream` transport: the bus's words as two bytes each, the mode bit (00h or 01h)
//! then the data byte (docs/mdb.md "`stream`: two bytes a word"), over a character device (a
//! pty, a USB bridge that speaks it) or a Unix socket agegate listens on, one VMC at a
//! time, so that a VMC simulator outside the process drives the device as the bus would.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use nix::poll::{poll, PollFd, PollFlags};

use super::transport::{BusClock, Heard, Transport, TransportError};
use super::{Micros, Word};

/// Whether `fd` has something to read within `wait` (or has hung up).
pub(crate) fn readable(fd: RawFd, wait: Duration) -> Result<bool, nix::errno::Errno> {
    let ms = i32::try_from(wait.as_millis()).unwrap_or(i32::MAX);
    let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
    match poll(&mut fds, ms) {
        Ok(n) => Ok(n > 0),
        Err(nix::errno::Errno::EINTR) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Writes all of `bytes` to a non-blocking `out`, waiting for room at most `patience` in
/// all.
pub(crate) fn write_all_within(
    out: &mut impl Write,
    fd: RawFd,
    mut bytes: &[u8],
    patience: Duration,
) -> std::io::Result<()> {
    let until = std::time::Instant::now() + patience;
    while !bytes.is_empty() {
        match out.write(bytes) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => bytes = bytes.get(n..).unwrap_or_default(),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left.is_zero() {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "the other end does not read",
                    ));
                }
                let ms = i32::try_from(left.as_millis().max(1)).unwrap_or(i32::MAX);
                let _ = poll(&mut [PollFd::new(fd, PollFlags::POLLOUT)], ms);
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Turns the stream's bytes back into words; a mode byte other than 0 or 1 is noise and
/// the next byte is tried as a mode byte (so one lost byte costs one word, not the rest).
#[derive(Debug, Default, Clone)]
pub(crate) struct StreamDecoder {
    mode: Option<u8>,
}

impl StreamDecoder {
    pub(crate) fn byte(&mut self, b: u8) -> Option<Result<Word, ()>> {
        match self.mode.take() {
            Some(mode) => Word::from_stream([mode, b]).ok().map(Ok),
            None if b <= 1 => {
                self.mode = Some(b);
                None
            }
            None => Some(Err(())),
        }
    }

    pub(crate) fn reset(&mut self) {
        self.mode = None;
    }
}

enum Conn {
    Device(File),
    Socket {
        listener: UnixListener,
        client: Option<UnixStream>,
    },
}

pub struct StreamTransport {
    path: PathBuf,
    name: String,
    conn: Option<Conn>,
    decoder: StreamDecoder,
    clock: BusClock,
}

/// How long a send may wait for a slow reader: t-response is 5 ms.
const SEND_PATIENCE: Duration = Duration::from_millis(20);

impl StreamTransport {
    /// A character device at `path` is opened (raw, if a terminal); anything else there
    /// must be a socket (a stale one is replaced), or nothing, and agegate listens.
    pub fn open(path: &Path, clock: BusClock) -> Result<Self, TransportError> {
        let mut t = Self {
            path: path.to_path_buf(),
            name: format!("stream {}", path.display()),
            conn: None,
            decoder: StreamDecoder::default(),
            clock,
        };
        t.reopen()?;
        Ok(t)
    }

    fn connect(&self) -> Result<Conn, TransportError> {
        let err = |e: &dyn std::fmt::Display| TransportError::new(&self.name, e);
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.file_type().is_char_device() => {
                let file = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
                    .open(&self.path)
                    .map_err(|e| err(&e))?;
                if let Ok(mut t) = nix::sys::termios::tcgetattr(file.as_raw_fd()) {
                    nix::sys::termios::cfmakeraw(&mut t);
                    nix::sys::termios::tcsetattr(
                        file.as_raw_fd(),
                        nix::sys::termios::SetArg::TCSANOW,
                        &t,
                    )
                    .map_err(|e| err(&e))?;
                }
                Ok(Conn::Device(file))
            }
            Ok(meta) if meta.file_type().is_socket() => {
                std::fs::remove_file(&self.path).map_err(|e| err(&e))?;
                self.listen()
            }
            Ok(_) => Err(err(
                &"neither a character device nor a socket: refusing to replace it",
            )),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => self.listen(),
            Err(e) => Err(err(&e)),
        }
    }

    fn listen(&self) -> Result<Conn, TransportError> {
        let err = |e: std::io::Error| TransportError::new(&self.name, e);
        let listener = UnixListener::bind(&self.path).map_err(err)?;
        listener.set_nonblocking(true).map_err(err)?;
        Ok(Conn::Socket {
            listener,
            client: None,
        })
    }

    fn decode(&mut self, bytes: &[u8], into: &mut Vec<Heard>) {
        let now = self.clock.now();
        for b in bytes {
            match self.decoder.byte(*b) {
                None => {}
                Some(Ok(word)) => into.push(Heard::Word(word, now)),
                Some(Err(())) => into.push(Heard::Noise),
            }
        }
    }
}

impl Transport for StreamTransport {
    fn name(&self) -> &str {
        &self.name
    }

    fn receive(&mut self, wait: Duration, into: &mut Vec<Heard>) -> Result<Micros, TransportError> {
        let name = self.name.clone();
        let lost = |e: &dyn std::fmt::Display| TransportError::new(&name, e);
        let mut buf = [0u8; 256];
        // Read after the wait, before the read: whatever arrived by then is in this read.
        let known;
        let read = match self.conn.as_mut() {
            None => return Err(lost(&"closed")),
            Some(Conn::Device(file)) => {
                let ready = readable(file.as_raw_fd(), wait).map_err(|e| lost(&e))?;
                known = self.clock.now();
                if !ready {
                    return Ok(known);
                }
                match file.read(&mut buf) {
                    Ok(0) => return Err(lost(&"hung up")),
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(known),
                    Err(e) => return Err(lost(&e)),
                }
            }
            Some(Conn::Socket { listener, client }) => {
                let Some(stream) = client else {
                    if readable(listener.as_raw_fd(), wait).map_err(|e| lost(&e))? {
                        if let Ok((stream, _)) = listener.accept() {
                            stream.set_nonblocking(true).map_err(|e| lost(&e))?;
                            tracing::info!("{name}: a VMC connected");
                            *client = Some(stream);
                            self.decoder.reset();
                        }
                    }
                    return Ok(self.clock.now());
                };
                let ready = readable(stream.as_raw_fd(), wait).map_err(|e| lost(&e))?;
                known = self.clock.now();
                if !ready {
                    return Ok(known);
                }
                match stream.read(&mut buf) {
                    Ok(0) => {
                        // The VMC went away; the next one may connect.
                        tracing::info!("{name}: the VMC disconnected");
                        *client = None;
                        into.push(Heard::BusReset);
                        return Ok(known);
                    }
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(known),
                    Err(e) => {
                        tracing::warn!("{name}: {e}; waiting for the next VMC");
                        *client = None;
                        return Ok(known);
                    }
                }
            }
        };
        self.decode(buf.get(..read).unwrap_or_default(), into);
        Ok(known)
    }

    fn send(&mut self, words: &[Word]) -> Result<(), TransportError> {
        let mut bytes = heapless::Vec::<u8, { 2 * super::MAX_BLOCK }>::new();
        for w in words {
            // At most MAX_BLOCK words: a transmission is one block.
            let _ = bytes.extend_from_slice(&w.to_stream());
        }
        let name = self.name.clone();
        match self.conn.as_mut() {
            None => Err(TransportError::new(&name, "closed")),
            Some(Conn::Device(file)) => {
                let fd = file.as_raw_fd();
                write_all_within(file, fd, &bytes, SEND_PATIENCE)
                    .map_err(|e| TransportError::new(&name, e))
            }
            // Nobody listens: as on a bus with no VMC, the words are lost.
            Some(Conn::Socket { client: None, .. }) => Ok(()),
            Some(Conn::Socket { client, .. }) => {
                let Some(stream) = client.as_mut() else {
                    return Ok(());
                };
                let fd = stream.as_raw_fd();
                if let Err(e) = write_all_within(stream, fd, &bytes, SEND_PATIENCE) {
                    tracing::warn!("{name}: {e}; waiting for the next VMC");
                    *client = None;
                }
                Ok(())
            }
        }
    }

    fn reopen(&mut self) -> Result<(), TransportError> {
        self.conn = None;
        self.decoder.reset();
        self.conn = Some(self.connect()?);
        Ok(())
    }
}

impl Drop for StreamTransport {
    fn drop(&mut self) {
        if matches!(self.conn, Some(Conn::Socket { .. })) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_decoder_resynchronises_after_a_bad_mode_byte() {
        let mut d = StreamDecoder::default();
        let mut got = Vec::new();
        for b in [0x01, 0x6A, 0x07, 0x00, 0x6A] {
            got.extend(d.byte(b));
        }
        assert_eq!(
            got,
            vec![Ok(Word::with_mode(0x6A)), Err(()), Ok(Word::data(0x6A))]
        );
    }

    #[test]
    fn a_vmc_on_the_socket_is_heard_and_answered() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mdb.sock");
        let mut t = StreamTransport::open(&path, BusClock::default()).expect("listen");
        let mut vmc = UnixStream::connect(&path).expect("connect");
        let mut heard = Vec::new();
        // The first receive accepts the VMC; what it sends is read after.
        t.receive(Duration::from_millis(200), &mut heard)
            .expect("accept");
        vmc.write_all(&[0x01, 0x6A, 0x00, 0x6A]).expect("poll");
        for _ in 0..20 {
            t.receive(Duration::from_millis(50), &mut heard)
                .expect("read");
            if heard.len() >= 2 {
                break;
            }
        }
        let words: Vec<Word> = heard
            .iter()
            .filter_map(|h| match h {
                Heard::Word(w, _) => Some(*w),
                _ => None,
            })
            .collect();
        assert_eq!(words, vec![Word::with_mode(0x6A), Word::data(0x6A)]);
        t.send(&[Word::with_mode(0x00)]).expect("ack");
        let mut ack = [0u8; 2];
        vmc.read_exact(&mut ack).expect("read ack");
        assert_eq!(ack, [0x01, 0x00]);
        // A regular file is never replaced by the socket.
        let file = dir.path().join("board.toml");
        std::fs::write(&file, "keep").expect("write");
        let err = StreamTransport::open(&file, BusClock::default())
            .err()
            .expect("refused");
        assert!(err.to_string().contains("refusing"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).expect("kept"), "keep");
    }
}
