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

mod bits;
mod scan;

use super::JpegError;
use bits::{Bits, Huffman};

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DHT: u8 = 0xC4;
const DRI: u8 = 0xDD;
const DNL: u8 = 0xDC;

/// The frame header (SOF) as far as the walk needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FrameHeader {
    pub width: u16,
    pub height: u16,
    pub progressive: bool,
    /// (component id, horizontal sampling, vertical sampling)
    pub components: Vec<(u8, u8, u8)>,
}

pub(super) fn damaged(message: impl Into<String>) -> JpegError {
    JpegError::Decode(message.into())
}

/// One component's 8x8 blocks, in the frame's MCU-padded grid.
#[derive(Debug, Clone, Copy)]
pub(super) struct Plane {
    pub(super) id: u8,
    pub(super) h: usize,
    pub(super) v: usize,
    /// Blocks a non-interleaved scan codes (the component's own size).
    pub(super) blocks_x: usize,
    pub(super) blocks_y: usize,
    /// Blocks per row of the MCU-padded grid (interleaved scans, the bit sets).
    pub(super) stride: usize,
}

/// What a scan (SOS) asks for.
pub(super) struct Scan {
    /// Index into the planes, DC table, AC table.
    pub(super) components: Vec<(usize, usize, usize)>,
    pub(super) ss: u8,
    pub(super) se: u8,
    pub(super) ah: u8,
    pub(super) al: u8,
}

/// Per component and coefficient (zig-zag order), the precision reached so far: `None`
/// before any scan coded it, else the last scan's Al (0 is full precision).
type Coverage = Vec<[Option<u8>; 64]>;

/// Walks `jpeg` (starting with SOI) to its EOI and returns the frame header and the
/// offset just past the EOI. Every damage listed in the module docs is an error.
pub(crate) fn walk(jpeg: &[u8]) -> Result<(FrameHeader, usize), JpegError> {
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
                let end = scan::walk_scan(
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
