//! Walking one scan block by block: sequential, progressive first passes and progressive
//! refinements, as T.81 and libjpeg decode them, counting bits instead of coefficients.

use super::bits::{Bits, Huffman};
use super::{damaged, Plane, Scan};
use crate::jpeg::JpegError;

/// Walks one scan's entropy-coded data; returns the offset of the marker after it.
#[allow(clippy::too_many_arguments)]
pub(super) fn walk_scan(
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
