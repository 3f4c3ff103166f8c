//! Reading a scan's entropy-coded data: the bits, unstuffed, up to the next marker, and the
//! canonical Huffman codes of a DHT segment.

use super::damaged;
use crate::jpeg::JpegError;

/// A canonical Huffman table from a DHT segment.
#[derive(Debug, Clone)]
pub(super) struct Huffman {
    /// Codes of each length 1..=16.
    counts: [u16; 17],
    symbols: Vec<u8>,
}

impl Huffman {
    pub(super) fn parse(counts: &[u8], symbols: &[u8]) -> Result<Self, JpegError> {
        let mut c = [0u16; 17];
        for (len, &n) in counts.iter().enumerate() {
            c[len + 1] = u16::from(n);
        }
        // A canonical code of these counts must exist (Kraft inequality).
        let mut available: u32 = 1;
        for count in c.iter().skip(1) {
            available *= 2;
            if u32::from(*count) > available {
                return Err(damaged("a Huffman table defines more codes than fit"));
            }
            available -= u32::from(*count);
        }
        Ok(Self {
            counts: c,
            symbols: symbols.to_vec(),
        })
    }

    /// The next symbol, read bit by bit (canonical code order).
    pub(super) fn decode(&self, bits: &mut Bits<'_>) -> Result<u8, JpegError> {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0usize);
        for len in 1..=16 {
            code |= i32::from(bits.bit()?);
            let count = i32::from(self.counts[len]);
            if code - first < count {
                let at = index + (code - first) as usize;
                return self
                    .symbols
                    .get(at)
                    .copied()
                    .ok_or_else(|| damaged("a Huffman code past the table's symbols"));
            }
            index += count as usize;
            first = (first + count) << 1;
            code <<= 1;
        }
        Err(damaged(
            "a Huffman code no table defines (damaged scan data)",
        ))
    }
}

/// Reads the entropy-coded bits of a scan, unstuffing `FF 00`, and stops at a marker:
/// asking for a bit past it is an error (the data was cut short).
pub(super) struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    byte: u8,
    left: u8,
    /// Set when the reader reached a marker: `(marker, its offset)`.
    marker: Option<(u8, usize)>,
}

impl<'a> Bits<'a> {
    pub(super) fn new(data: &'a [u8], pos: usize) -> Self {
        Self {
            data,
            pos,
            byte: 0,
            left: 0,
            marker: None,
        }
    }

    /// The next byte of entropy data, or `None` at a marker (which is then recorded).
    fn next_byte(&mut self) -> Result<Option<u8>, JpegError> {
        if self.marker.is_some() {
            return Ok(None);
        }
        let Some(&b) = self.data.get(self.pos) else {
            return Err(JpegError::Truncated);
        };
        if b != 0xFF {
            self.pos += 1;
            return Ok(Some(b));
        }
        // FF 00 is a stuffed FF; FF FF.. are fill bytes before a marker.
        let mut at = self.pos + 1;
        while self.data.get(at) == Some(&0xFF) {
            at += 1;
        }
        match self.data.get(at) {
            None => Err(JpegError::Truncated),
            Some(0x00) if at == self.pos + 1 => {
                self.pos += 2;
                Ok(Some(0xFF))
            }
            Some(&m) => {
                self.marker = Some((m, at - 1));
                Ok(None)
            }
        }
    }

    pub(super) fn bit(&mut self) -> Result<u8, JpegError> {
        if self.left == 0 {
            match self.next_byte()? {
                Some(b) => {
                    self.byte = b;
                    self.left = 8;
                }
                None => {
                    return Err(damaged(
                        "the scan's data ends before its last block (cut short)",
                    ))
                }
            }
        }
        self.left -= 1;
        Ok((self.byte >> self.left) & 1)
    }

    pub(super) fn bits(&mut self, n: u8) -> Result<u32, JpegError> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | u32::from(self.bit()?);
        }
        Ok(v)
    }

    /// The end of an interval or scan: the rest of the byte is padding; the data must
    /// stop at a marker here. Returns the marker and its offset.
    pub(super) fn finish(&mut self) -> Result<(u8, usize), JpegError> {
        self.left = 0;
        let mut extra = 0usize;
        while self.next_byte()?.is_some() {
            extra += 1;
        }
        if extra > 0 {
            return Err(damaged(format!(
                "{extra} bytes of data after the scan's last block (damaged scan data)"
            )));
        }
        self.marker.ok_or(JpegError::Truncated)
    }

    /// Steps over a restart marker found by [`Bits::finish`].
    pub(super) fn restart(&mut self, marker_at: usize) {
        self.pos = marker_at + 2;
        self.marker = None;
        self.left = 0;
    }
}
