//! The JPEG's structure, walked without decoding pixels: every marker segment, and the
//! entropy-coded data of every scan symbol by symbol (Huffman codes and the bits after
//! them, no IDCT), so that what a lenient decoder papers over is seen and reported:
//!
//! - entropy data that ends before the scan's last block (a cut-off frame with an EOI
//!   appended decodes half grey elsewhere);
//! - restart markers missing, out of sequence, or at the wrong place;
//! - bytes of data left after a scan's last block (a desynchronised, damaged scan);
//! - components that no scan codes, and progressive coefficients never refined to full
//!   precision (missing scans);
//! - Huffman codes no table defines, tables or components a scan names but the header
//!   does not define, and coefficient indices past 63.
//!
//! Baseline, extended and progressive Huffman JPEG are walked (what cameras and photo
//! software write); lossless, hierarchical and arithmetic-coded frames are refused as
//! unsupported, as the decoder would. The walk is linear in the file's size and reads
//! only within the slice: no input makes it panic or allocate more than one bit set per
//! 8x8 block (progressive frames), and the caller bounds the block count first.

use super::JpegError;

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DHT: u8 = 0xC4;
const DRI: u8 = 0xDD;
const DNL: u8 = 0xDC;

/// The frame header (SOF) as far as the walk needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameHeader {
    pub width: u16,
    pub height: u16,
    pub progressive: bool,
    /// (component id, horizontal sampling, vertical sampling)
    pub components: Vec<(u8, u8, u8)>,
}

fn damaged(message: impl Into<String>) -> JpegError {
    JpegError::Decode(message.into())
}

/// A canonical Huffman table from a DHT segment.
#[derive(Debug, Clone)]
struct Huffman {
    /// Codes of each length 1..=16.
    counts: [u16; 17],
    symbols: Vec<u8>,
}

impl Huffman {
    fn parse(counts: &[u8], symbols: &[u8]) -> Result<Self, JpegError> {
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
    fn decode(&self, bits: &mut Bits<'_>) -> Result<u8, JpegError> {
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
struct Bits<'a> {
    data: &'a [u8],
    pos: usize,
    byte: u8,
    left: u8,
    /// Set when the reader reached a marker: `(marker, its offset)`.
    marker: Option<(u8, usize)>,
}

impl<'a> Bits<'a> {
    fn new(data: &'a [u8], pos: usize) -> Self {
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

    fn bit(&mut self) -> Result<u8, JpegError> {
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

    fn bits(&mut self, n: u8) -> Result<u32, JpegError> {
        let mut v = 0u32;
        for _ in 0..n {
            v = (v << 1) | u32::from(self.bit()?);
        }
        Ok(v)
    }

    /// The end of an interval or scan: the rest of the byte is padding; the data must
    /// stop at a marker here. Returns the marker and its offset.
    fn finish(&mut self) -> Result<(u8, usize), JpegError> {
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
    fn restart(&mut self, marker_at: usize) {
        self.pos = marker_at + 2;
        self.marker = None;
        self.left = 0;
    }
}

/// One component's 8x8 blocks, in the frame's MCU-padded grid.
#[derive(Debug, Clone, Copy)]
struct Plane {
    id: u8,
    h: usize,
    v: usize,
    /// Blocks a non-interleaved scan codes (the component's own size).
    blocks_x: usize,
    blocks_y: usize,
    /// Blocks per row of the MCU-padded grid (interleaved scans, the bit sets).
    stride: usize,
}

/// What a scan (SOS) asks for.
struct Scan {
    /// Index into the planes, DC table, AC table.
    components: Vec<(usize, usize, usize)>,
    ss: u8,
    se: u8,
    ah: u8,
    al: u8,
}

/// Per component and coefficient (zig-zag order), the precision reached so far: `None`
/// before any scan coded it, else the last scan's Al (0 is full precision).
type Coverage = Vec<[Option<u8>; 64]>;

/// Walks `jpeg` (starting with SOI) to its EOI and returns the frame header and the
/// offset just past the EOI. Every damage listed in the module docs is an error.
pub fn walk(jpeg: &[u8]) -> Result<(FrameHeader, usize), JpegError> {
    if jpeg.get(..2) != Some(&[0xFF, SOI][..]) {
        return Err(JpegError::NoStart);
    }
    let mut dc: [Option<Huffman>; 4] = Default::default();
    let mut ac: [Option<Huffman>; 4] = Default::default();
    let mut frame: Option<(FrameHeader, Vec<Plane>, usize, usize)> = None;
    let mut restart_interval = 0usize;
    let mut coverage: Coverage = Vec::new();
    let mut nonzero: Vec<Vec<u64>> = Vec::new();
    let mut i = 2;
    loop {
        let (Some(&ff), Some(&marker)) = (jpeg.get(i), jpeg.get(i + 1)) else {
            return Err(JpegError::Truncated);
        };
        if ff != 0xFF {
            return Err(JpegError::BadSegment(i));
        }
        if marker == 0xFF {
            i += 1;
            continue;
        }
        if marker == EOI {
            let Some((header, planes, ..)) = frame else {
                return Err(damaged("no frame header (SOF) before the end of the image"));
            };
            check_coverage(&header, &planes, &coverage)?;
            return Ok((header, i + 2));
        }
        if matches!(marker, SOI | 0x01 | 0xD0..=0xD7) {
            return Err(damaged(format!(
                "marker FF {marker:02X} at byte {i} outside a scan"
            )));
        }
        let (Some(&hi), Some(&lo)) = (jpeg.get(i + 2), jpeg.get(i + 3)) else {
            return Err(JpegError::Truncated);
        };
        let len = usize::from(u16::from_be_bytes([hi, lo]));
        let body = jpeg
            .get(i + 4..i + 2 + len.max(2))
            .filter(|_| len >= 2)
            .ok_or(JpegError::BadSegment(i))?;
        match marker {
            0xC0..=0xC2 => {
                if frame.is_some() {
                    return Err(damaged("a second frame header (SOF)"));
                }
                let parsed = parse_frame(body, marker == 0xC2)?;
                coverage = vec![[None; 64]; parsed.1.len()];
                if parsed.0.progressive {
                    nonzero = parsed.1.iter().map(|p| vec![0u64; p.stride * parsed.3 * p.v]).collect();
                }
                frame = Some(parsed);
            }
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => {
                return Err(JpegError::Decode(format!(
                    "unsupported JPEG process (SOF FF {marker:02X}: lossless, hierarchical or arithmetic-coded)"
                )))
            }
            DHT => parse_dht(body, &mut dc, &mut ac)?,
            DRI => {
                let [a, b] = body else {
                    return Err(JpegError::BadSegment(i));
                };
                restart_interval = usize::from(u16::from_be_bytes([*a, *b]));
            }
            DNL => return Err(damaged("DNL (line count after the scan) is not supported")),
            SOS => {
                let Some((header, planes, mcus_x, mcus_y)) = frame.as_ref() else {
                    return Err(damaged("a scan (SOS) before the frame header (SOF)"));
                };
                let scan = parse_scan(body, header, planes, &dc, &ac)?;
                record_coverage(&scan, header.progressive, &mut coverage)?;
                let mut bits = Bits::new(jpeg, i + 2 + len);
                let end = walk_scan(
                    &mut bits,
                    &scan,
                    planes,
                    (*mcus_x, *mcus_y),
                    restart_interval,
                    &dc,
                    &ac,
                    &mut nonzero,
                )?;
                i = end;
                continue;
            }
            // DQT, COM, APPn and the rest: skipped by length.
            _ => {}
        }
        i += 2 + len;
    }
}

fn parse_frame(
    body: &[u8],
    progressive: bool,
) -> Result<(FrameHeader, Vec<Plane>, usize, usize), JpegError> {
    let bad = || damaged("malformed frame header (SOF)");
    let (&precision, rest) = body.split_first().ok_or_else(bad)?;
    if precision != 8 {
        return Err(JpegError::Decode(format!(
            "{precision}-bit samples are not supported (8-bit only)"
        )));
    }
    let [h0, h1, w0, w1, n, rest @ ..] = rest else {
        return Err(bad());
    };
    let (height, width) = (
        u16::from_be_bytes([*h0, *h1]),
        u16::from_be_bytes([*w0, *w1]),
    );
    if width == 0 || height == 0 {
        return Err(damaged(format!("frame header declares {width}x{height}")));
    }
    let n = usize::from(*n);
    if n == 0 || n > 4 || rest.len() != 3 * n {
        return Err(bad());
    }
    let mut components = Vec::with_capacity(n);
    for c in rest.chunks_exact(3) {
        let (h, v) = (c[1] >> 4, c[1] & 15);
        if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
            return Err(damaged("a component's sampling factor is outside 1..4"));
        }
        if components.iter().any(|(id, _, _)| *id == c[0]) {
            return Err(damaged("two components with the same id"));
        }
        components.push((c[0], h, v));
    }
    let h_max = usize::from(components.iter().map(|c| c.1).max().unwrap_or(1));
    let v_max = usize::from(components.iter().map(|c| c.2).max().unwrap_or(1));
    let (w, hgt) = (usize::from(width), usize::from(height));
    let mcus_x = w.div_ceil(8 * h_max);
    let mcus_y = hgt.div_ceil(8 * v_max);
    let planes = components
        .iter()
        .map(|&(id, h, v)| {
            let (h, v) = (usize::from(h), usize::from(v));
            Plane {
                id,
                h,
                v,
                blocks_x: (w * h).div_ceil(h_max).div_ceil(8),
                blocks_y: (hgt * v).div_ceil(v_max).div_ceil(8),
                stride: mcus_x * h,
            }
        })
        .collect();
    let header = FrameHeader {
        width,
        height,
        progressive,
        components,
    };
    Ok((header, planes, mcus_x, mcus_y))
}

fn parse_dht(
    mut body: &[u8],
    dc: &mut [Option<Huffman>; 4],
    ac: &mut [Option<Huffman>; 4],
) -> Result<(), JpegError> {
    let bad = || damaged("malformed Huffman table segment (DHT)");
    while let Some((&tc_th, rest)) = body.split_first() {
        let (class, id) = (tc_th >> 4, usize::from(tc_th & 15));
        if class > 1 || id > 3 {
            return Err(bad());
        }
        let counts = rest.get(..16).ok_or_else(bad)?;
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        let symbols = rest.get(16..16 + total).ok_or_else(bad)?;
        let table = Huffman::parse(counts, symbols)?;
        if class == 0 {
            dc[id] = Some(table);
        } else {
            ac[id] = Some(table);
        }
        body = &rest[16 + total..];
    }
    Ok(())
}

fn parse_scan(
    body: &[u8],
    header: &FrameHeader,
    planes: &[Plane],
    dc: &[Option<Huffman>; 4],
    ac: &[Option<Huffman>; 4],
) -> Result<Scan, JpegError> {
    let bad = || damaged("malformed scan header (SOS)");
    let (&n, rest) = body.split_first().ok_or_else(bad)?;
    let n = usize::from(n);
    if n == 0 || n > 4 || rest.len() != 2 * n + 3 {
        return Err(bad());
    }
    let mut components = Vec::with_capacity(n);
    for c in rest[..2 * n].chunks_exact(2) {
        let plane = planes
            .iter()
            .position(|p| p.id == c[0])
            .ok_or_else(|| damaged(format!("a scan names component {} the frame lacks", c[0])))?;
        if components.iter().any(|(p, _, _)| *p == plane) {
            return Err(bad());
        }
        components.push((plane, usize::from(c[1] >> 4), usize::from(c[1] & 15)));
    }
    let (ss, se, ah, al) = (
        rest[2 * n],
        rest[2 * n + 1],
        rest[2 * n + 2] >> 4,
        rest[2 * n + 2] & 15,
    );
    let valid = if header.progressive {
        // DC scans may interleave; AC scans code one component, within one band.
        (ss == 0 && se == 0) || (ss >= 1 && ss <= se && se <= 63 && n == 1)
    } else {
        ss == 0 && se == 63 && ah == 0 && al == 0
    };
    if !valid || al > 13 {
        return Err(damaged(format!(
            "a scan with an impossible band or precision (Ss {ss}, Se {se}, Ah {ah}, Al {al})"
        )));
    }
    if n > 1 {
        let blocks: usize = components
            .iter()
            .map(|&(p, _, _)| planes[p].h * planes[p].v)
            .sum();
        if blocks > 10 {
            return Err(damaged(
                "an interleaved scan with more than 10 blocks per MCU",
            ));
        }
    }
    // The tables the scan's data needs must exist (a refining DC scan reads raw bits).
    for &(plane, dc_id, ac_id) in &components {
        let needs_dc = ss == 0 && ah == 0;
        let needs_ac = se > 0;
        if (needs_dc && dc.get(dc_id).and_then(Option::as_ref).is_none())
            || (needs_ac && ac.get(ac_id).and_then(Option::as_ref).is_none())
        {
            return Err(damaged(format!(
                "a scan of component {} uses a Huffman table that was never defined",
                planes[plane].id
            )));
        }
    }
    Ok(Scan {
        components,
        ss,
        se,
        ah,
        al,
    })
}

/// Records the precision a scan brings each coefficient to, refusing a refinement of a
/// band never coded, a first pass over one already coded, or a refinement by more than one
/// bit (as T.81 G.1.1.1.1 requires).
fn record_coverage(
    scan: &Scan,
    progressive: bool,
    coverage: &mut Coverage,
) -> Result<(), JpegError> {
    for &(plane, _, _) in &scan.components {
        for now in &mut coverage[plane][usize::from(scan.ss)..=usize::from(scan.se)] {
            let ok = match (*now, scan.ah) {
                (None, 0) => true,
                (Some(prev), ah) if progressive && ah != 0 => ah == prev && scan.al + 1 == ah,
                _ => false,
            };
            if !ok {
                return Err(damaged(
                    "scans out of order: a band coded twice, or refined before it was coded",
                ));
            }
            *now = Some(scan.al);
        }
    }
    Ok(())
}

fn check_coverage(
    header: &FrameHeader,
    planes: &[Plane],
    coverage: &Coverage,
) -> Result<(), JpegError> {
    let last = if header.progressive { 63 } else { 0 };
    for (plane, cov) in planes.iter().zip(coverage) {
        // Sequential frames: one scan per component covers 0..=63 at once (k = 0 checked).
        if cov[..=last].iter().any(|c| *c != Some(0)) {
            return Err(damaged(format!(
                "scans missing: component {} is not fully coded",
                plane.id
            )));
        }
    }
    Ok(())
}

/// Walks one scan's entropy-coded data; returns the offset of the marker after it.
#[allow(clippy::too_many_arguments)]
fn walk_scan(
    bits: &mut Bits<'_>,
    scan: &Scan,
    planes: &[Plane],
    (mcus_x, mcus_y): (usize, usize),
    restart_interval: usize,
    dc: &[Option<Huffman>; 4],
    ac: &[Option<Huffman>; 4],
    nonzero: &mut [Vec<u64>],
) -> Result<usize, JpegError> {
    // A non-interleaved scan's MCU is one block of its component, over the component's
    // own size; an interleaved scan's MCU covers h x v blocks of each component.
    let interleaved = scan.components.len() > 1;
    let (units_x, units_y) = if interleaved {
        (mcus_x, mcus_y)
    } else {
        let p = &planes[scan.components[0].0];
        (p.blocks_x, p.blocks_y)
    };
    let units = units_x * units_y;
    let mut eobrun = 0u32;
    let mut next_rst = 0u8;
    for unit in 0..units {
        if restart_interval > 0 && unit > 0 && unit % restart_interval == 0 {
            let (marker, at) = bits.finish()?;
            if marker != 0xD0 + next_rst {
                return Err(damaged(format!(
                    "restart marker FF {marker:02X} where RST{next_rst} was due (block {unit})"
                )));
            }
            bits.restart(at);
            next_rst = (next_rst + 1) % 8;
            eobrun = 0;
        }
        let (ux, uy) = (unit % units_x, unit / units_x);
        for &(plane, dc_id, ac_id) in &scan.components {
            let p = &planes[plane];
            let (bh, bv) = if interleaved { (p.h, p.v) } else { (1, 1) };
            for by in 0..bv {
                for bx in 0..bh {
                    let (x, y) = if interleaved {
                        (ux * p.h + bx, uy * p.v + by)
                    } else {
                        (ux, uy)
                    };
                    let block = nonzero
                        .get_mut(plane)
                        .and_then(|n| n.get_mut(y * p.stride + x));
                    walk_block(bits, scan, dc.get(dc_id), ac.get(ac_id), &mut eobrun, block)?;
                }
            }
        }
    }
    if eobrun > 0 {
        return Err(damaged("an end-of-band run longer than the scan"));
    }
    let (marker, at) = bits.finish()?;
    if (0xD0..=0xD7).contains(&marker) {
        return Err(damaged("a restart marker after the scan's last block"));
    }
    Ok(at)
}

fn table(t: Option<&Option<Huffman>>) -> Result<&Huffman, JpegError> {
    t.and_then(Option::as_ref)
        .ok_or_else(|| damaged("a Huffman table that was never defined"))
}

/// One 8x8 block of a scan. `block` is its bit set of nonzero coefficients (progressive
/// frames only).
fn walk_block(
    bits: &mut Bits<'_>,
    scan: &Scan,
    dc: Option<&Option<Huffman>>,
    ac: Option<&Option<Huffman>>,
    eobrun: &mut u32,
    mut block: Option<&mut u64>,
) -> Result<(), JpegError> {
    let too_far = || damaged("a coefficient past the 64th (damaged scan data)");
    let (ss, se) = (usize::from(scan.ss), usize::from(scan.se));
    if ss == 0 {
        if scan.ah == 0 {
            let s = table(dc)?.decode(bits)?;
            if s > 11 {
                return Err(damaged("a DC difference over 11 bits (damaged scan data)"));
            }
            bits.bits(s)?;
        } else {
            bits.bit()?;
        }
        if se == 0 {
            return Ok(());
        }
    }
    let ac = table(ac)?;
    if ss == 0 {
        // Sequential: the whole block, 1..=63.
        let mut k = 1;
        while k < 64 {
            let rs = ac.decode(bits)?;
            let (r, s) = (usize::from(rs >> 4), rs & 15);
            if s == 0 {
                if r != 15 {
                    return Ok(());
                }
                k += 16;
            } else {
                k += r;
                if k > 63 {
                    return Err(too_far());
                }
                bits.bits(s)?;
                k += 1;
            }
        }
        return if k == 64 { Ok(()) } else { Err(too_far()) };
    }
    let set = |k: usize, block: &mut Option<&mut u64>| {
        if let Some(b) = block.as_deref_mut() {
            *b |= 1 << k;
        }
    };
    let is_set =
        |k: usize, block: &Option<&mut u64>| block.as_deref().is_some_and(|b| b & (1 << k) != 0);
    if scan.ah == 0 {
        // Progressive AC, first pass.
        if *eobrun > 0 {
            *eobrun -= 1;
            return Ok(());
        }
        let mut k = ss;
        while k <= se {
            let rs = ac.decode(bits)?;
            let (r, s) = (usize::from(rs >> 4), rs & 15);
            if s == 0 {
                if r == 15 {
                    k += 16;
                    continue;
                }
                *eobrun = (1 << r) + bits.bits(r as u8)? - 1;
                return Ok(());
            }
            k += r;
            if k > se {
                return Err(too_far());
            }
            bits.bits(s)?;
            set(k, &mut block);
            k += 1;
        }
        return if k == se + 1 { Ok(()) } else { Err(too_far()) };
    }
    // Progressive AC, refinement (T.81 G.1.2.3, as libjpeg decodes it).
    let mut k = ss;
    if *eobrun == 0 {
        while k <= se {
            let rs = ac.decode(bits)?;
            let (mut r, s) = (i32::from(rs >> 4), rs & 15);
            if s != 0 {
                if s != 1 {
                    return Err(damaged("a refinement with a coefficient over one bit"));
                }
                bits.bit()?;
            } else if r != 15 {
                *eobrun = (1 << r) + bits.bits(r as u8)?;
                break;
            }
            // Over the already-nonzero coefficients (one correction bit each) and r
            // still-zero ones, to the one this symbol makes nonzero.
            loop {
                if k > se {
                    break;
                }
                if is_set(k, &block) {
                    bits.bit()?;
                } else {
                    r -= 1;
                    if r < 0 {
                        break;
                    }
                }
                k += 1;
            }
            if s != 0 {
                if k > se {
                    return Err(too_far());
                }
                set(k, &mut block);
            }
            k += 1;
        }
    }
    if *eobrun > 0 {
        while k <= se {
            if is_set(k, &block) {
                bits.bit()?;
            }
            k += 1;
        }
        *eobrun -= 1;
    }
    Ok(())
}
