//! Degradations of a decoded photo, as real cameras and scans make them: what
//! `agegate eval --degrade` applies before detection to measure how robust the model is.
//!
//! The definitions are the model pipeline's (`models/agegate_models/degrade.py`, used for
//! training augmentation and the Python validation sets); keep both in step. Sizes are
//! defined at the 200 px scale of a UTKFace crop and scale with the image,
//! `s = min(width, height) / 200`. Every kind computes in `f32` and rounds once at its end.
//! Deterministic: the noise of `scan` comes from a seed the caller derives per image.
//!
//! | kind | what |
//! |---|---|
//! | `grey` | luma `0.299 R + 0.587 G + 0.114 B` in all three channels |
//! | `lowres` | down to `round(W * 48 / 200) x round(H * 48 / 200)` and back, bilinear |
//! | `blur` | Gaussian, sigma `2 s` px, edges clamped |
//! | `jpeg` | re-encoded at quality 12 |
//! | `scan` | grey; contrast x0.6 around the mean; Gaussian noise sigma 8; sepia tint `(0.94 y + 20, 0.82 y + 12, 0.64 y + 4)`; blur sigma `1 s` |
//! | `small` | longer side scaled to 120 px and pasted at the centre of a 600 x 600 grey-green `(120, 130, 110)` scene |
//! | `dark` | `255 * 0.5 * (x / 255)^2.2` |
//! | `colorcast` | channel gains R x1.2, G x1.0, B x0.8 |

use image::imageops::FilterType;
use image::{Rgb, RgbImage};

/// One kind of degradation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Grey,
    Lowres,
    Blur,
    Jpeg,
    Scan,
    Small,
    Dark,
    Colorcast,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Grey,
        Kind::Lowres,
        Kind::Blur,
        Kind::Jpeg,
        Kind::Scan,
        Kind::Small,
        Kind::Dark,
        Kind::Colorcast,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Grey => "grey",
            Kind::Lowres => "lowres",
            Kind::Blur => "blur",
            Kind::Jpeg => "jpeg",
            Kind::Scan => "scan",
            Kind::Small => "small",
            Kind::Dark => "dark",
            Kind::Colorcast => "colorcast",
        }
    }

    fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// What `--degrade` asks for: one entry per report, each one kind or several applied in
/// turn (`small+jpeg`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Degradation(pub Vec<Kind>);

impl Degradation {
    /// Parses `grey,scan`, `small+jpeg`, or `all` (every kind, one report each).
    pub fn parse_list(spec: &str) -> Result<Vec<Degradation>, String> {
        let mut out = Vec::new();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if item == "all" {
                out.extend(Kind::ALL.map(|k| Degradation(vec![k])));
                continue;
            }
            let kinds = item
                .split('+')
                .map(|k| {
                    Kind::from_name(k.trim()).ok_or_else(|| {
                        let known: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                        format!(
                            "unknown degradation `{k}`: give {} or all",
                            known.join(", ")
                        )
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            out.push(Degradation(kinds));
        }
        if out.is_empty() {
            return Err("no degradation named".into());
        }
        Ok(out)
    }

    /// The report's name: the kinds joined by `+`.
    pub fn name(&self) -> String {
        self.0
            .iter()
            .map(|k| k.name())
            .collect::<Vec<_>>()
            .join("+")
    }

    /// Applies the kinds in turn; `seed` drives the noise of `scan`.
    pub fn apply(&self, image: &RgbImage, seed: u64) -> RgbImage {
        let mut out = image.clone();
        for kind in &self.0 {
            out = apply(*kind, &out, seed);
        }
        out
    }
}

/// A per-image seed from its name (FNV-1a), so every run degrades a photo the same way.
pub fn seed_of(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3)
    })
}

fn u8_of(v: f32) -> u8 {
    // Round half away from zero, then clip (as the Python side does).
    v.round().clamp(0.0, 255.0) as u8
}

fn scale(image: &RgbImage) -> f32 {
    image.width().min(image.height()) as f32 / 200.0
}

fn luma(p: &Rgb<u8>) -> f32 {
    0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * f32::from(p[2])
}

/// One kind applied to `image`.
pub fn apply(kind: Kind, image: &RgbImage, seed: u64) -> RgbImage {
    let (w, h) = image.dimensions();
    match kind {
        Kind::Grey => RgbImage::from_fn(w, h, |x, y| {
            let v = u8_of(luma(image.get_pixel(x, y)));
            Rgb([v, v, v])
        }),
        Kind::Lowres => {
            let sw = ((w as f32 * 48.0 / 200.0).round() as u32).max(1);
            let sh = ((h as f32 * 48.0 / 200.0).round() as u32).max(1);
            let small = image::imageops::resize(image, sw, sh, FilterType::Triangle);
            image::imageops::resize(&small, w, h, FilterType::Triangle)
        }
        Kind::Blur => {
            let plane = Planes::of(image);
            plane.blur(2.0 * scale(image)).to_image()
        }
        Kind::Jpeg => {
            let mut bytes = Vec::new();
            let encoded = image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, 12)
                .encode_image(image);
            let mut out = RgbImage::new(1, 1);
            // The encoder and the strict decoder both come from this crate's own
            // dependencies: a failure here is a bug, and the photo is left as it was.
            match encoded.map_err(|e| e.to_string()).and_then(|()| {
                crate::jpeg::decode_into(&bytes, &mut Vec::new(), &mut out, u64::MAX)
                    .map_err(|e| e.to_string())
            }) {
                Ok(_) => out,
                Err(e) => {
                    tracing::error!("jpeg degradation: {e}");
                    image.clone()
                }
            }
        }
        Kind::Scan => {
            let lum: Vec<f32> = image.pixels().map(luma).collect();
            let mean = lum.iter().sum::<f32>() / lum.len().max(1) as f32;
            let mut noise = Gaussian::new(seed);
            let mut planes = Planes {
                width: w,
                height: h,
                data: [Vec::new(), Vec::new(), Vec::new()],
            };
            const GAIN: [f32; 3] = [0.94, 0.82, 0.64];
            const OFFSET: [f32; 3] = [20.0, 12.0, 4.0];
            for c in 0..3 {
                planes.data[c] = Vec::with_capacity(lum.len());
            }
            for y in lum {
                let v = mean + 0.6 * (y - mean) + 8.0 * noise.next();
                for c in 0..3 {
                    planes.data[c].push(GAIN[c] * v + OFFSET[c]);
                }
            }
            planes.blur(scale(image)).to_image()
        }
        Kind::Small => {
            let f = 120.0 / w.max(h) as f32;
            let nw = ((w as f32 * f).round() as u32).max(1);
            let nh = ((h as f32 * f).round() as u32).max(1);
            let face = image::imageops::resize(image, nw, nh, FilterType::Triangle);
            let mut scene = RgbImage::from_pixel(600, 600, Rgb([120, 130, 110]));
            let (x0, y0) = ((600 - nw.min(600)) / 2, (600 - nh.min(600)) / 2);
            image::imageops::replace(&mut scene, &face, i64::from(x0), i64::from(y0));
            scene
        }
        Kind::Dark => RgbImage::from_fn(w, h, |x, y| {
            let p = image.get_pixel(x, y);
            Rgb(p
                .0
                .map(|v| u8_of(255.0 * 0.5 * (f32::from(v) / 255.0).powf(2.2))))
        }),
        Kind::Colorcast => RgbImage::from_fn(w, h, |x, y| {
            let p = image.get_pixel(x, y);
            Rgb([
                u8_of(f32::from(p[0]) * 1.2),
                p[1],
                u8_of(f32::from(p[2]) * 0.8),
            ])
        }),
    }
}

/// Three float planes of an image, for the kinds that blur.
struct Planes {
    width: u32,
    height: u32,
    data: [Vec<f32>; 3],
}

impl Planes {
    fn of(image: &RgbImage) -> Self {
        let mut data = [Vec::new(), Vec::new(), Vec::new()];
        for (c, plane) in data.iter_mut().enumerate() {
            *plane = image.pixels().map(|p| f32::from(p[c])).collect();
        }
        Self {
            width: image.width(),
            height: image.height(),
            data,
        }
    }

    /// Separable Gaussian blur, kernel radius `ceil(3 sigma)` (at least 1), edges clamped.
    fn blur(mut self, sigma: f32) -> Self {
        if sigma <= 0.0 {
            return self;
        }
        let r = ((3.0 * sigma).ceil() as i64).max(1);
        let kernel: Vec<f32> = (-r..=r)
            .map(|x| (-((x * x) as f32) / (2.0 * sigma * sigma)).exp())
            .collect();
        let sum: f32 = kernel.iter().sum();
        let kernel: Vec<f32> = kernel.iter().map(|k| k / sum).collect();
        let (w, h) = (self.width as i64, self.height as i64);
        for plane in &mut self.data {
            let mut tmp = vec![0.0f32; plane.len()];
            for y in 0..h {
                for x in 0..w {
                    tmp[(y * w + x) as usize] = (-r..=r)
                        .map(|d| {
                            let xx = (x + d).clamp(0, w - 1);
                            kernel[(d + r) as usize] * plane[(y * w + xx) as usize]
                        })
                        .sum();
                }
            }
            for y in 0..h {
                for x in 0..w {
                    plane[(y * w + x) as usize] = (-r..=r)
                        .map(|d| {
                            let yy = (y + d).clamp(0, h - 1);
                            kernel[(d + r) as usize] * tmp[(yy * w + x) as usize]
                        })
                        .sum();
                }
            }
        }
        self
    }

    fn to_image(&self) -> RgbImage {
        let w = self.width;
        RgbImage::from_fn(self.width, self.height, |x, y| {
            let i = (y * w + x) as usize;
            Rgb([0, 1, 2].map(|c| u8_of(self.data[c][i])))
        })
    }
}

/// Standard normal draws (Box-Muller over xorshift64*), seeded.
struct Gaussian {
    state: u64,
    spare: Option<f32>,
}

impl Gaussian {
    fn new(seed: u64) -> Self {
        Self {
            state: seed | 1,
            spare: None,
        }
    }

    fn uniform(&mut self) -> f64 {
        self.state ^= self.state >> 12;
        self.state ^= self.state << 25;
        self.state ^= self.state >> 27;
        let v = self.state.wrapping_mul(0x2545_F491_4F6C_DD1D);
        // (0, 1]: never 0, so the logarithm below is finite.
        ((v >> 11) as f64 + 1.0) / (1u64 << 53) as f64
    }

    fn next(&mut self) -> f32 {
        if let Some(v) = self.spare.take() {
            return v;
        }
        let (u1, u2) = (self.uniform(), self.uniform());
        let r = (-2.0 * u1.ln()).sqrt();
        let t = std::f64::consts::TAU * u2;
        self.spare = Some((r * t.sin()) as f32);
        (r * t.cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gradient(w: u32, h: u32) -> RgbImage {
        RgbImage::from_fn(w, h, |x, y| {
            Rgb([(x * 255 / w) as u8, (y * 255 / h) as u8, 100])
        })
    }

    #[test]
    fn kinds_parse_by_name_and_all_means_every_kind() {
        let list = Degradation::parse_list("grey, small+jpeg").unwrap();
        assert_eq!(list[0], Degradation(vec![Kind::Grey]));
        assert_eq!(list[1].name(), "small+jpeg");
        assert_eq!(Degradation::parse_list("all").unwrap().len(), 8);
        let err = Degradation::parse_list("grey,fog").unwrap_err();
        assert!(err.contains("`fog`") && err.contains("colorcast"), "{err}");
        assert!(Degradation::parse_list(" , ").is_err());
    }

    #[test]
    fn each_kind_does_what_its_definition_says() {
        let img = gradient(200, 200);
        let grey = apply(Kind::Grey, &img, 0);
        assert!(grey.pixels().all(|p| p[0] == p[1] && p[1] == p[2]));
        let p = img.get_pixel(100, 50);
        let expected = (0.299 * f32::from(p[0]) + 0.587 * f32::from(p[1]) + 0.114 * 100.0).round();
        assert_eq!(f32::from(grey.get_pixel(100, 50)[0]), expected);

        let dark = apply(Kind::Dark, &img, 0);
        assert_eq!(
            dark.get_pixel(199, 199)[0],
            u8_of(127.5 * (253.0f32 / 255.0).powf(2.2))
        );
        let cast = apply(Kind::Colorcast, &img, 0);
        assert_eq!(cast.get_pixel(0, 0)[2], 80);

        let small = apply(Kind::Small, &img, 0);
        assert_eq!(small.dimensions(), (600, 600));
        assert_eq!(small.get_pixel(5, 5).0, [120, 130, 110]);
        assert_ne!(small.get_pixel(300, 300).0, [120, 130, 110]);

        for kind in [Kind::Lowres, Kind::Blur, Kind::Jpeg, Kind::Scan] {
            let out = apply(kind, &img, 7);
            assert_eq!(out.dimensions(), img.dimensions(), "{kind:?}");
            assert_ne!(out, img, "{kind:?} changed nothing");
        }
        // Blur keeps a flat image flat; sharp edges soften.
        let flat = RgbImage::from_pixel(50, 40, Rgb([90, 90, 90]));
        assert_eq!(apply(Kind::Blur, &flat, 0), flat);
        let edge = RgbImage::from_fn(60, 60, |x, _| Rgb([if x < 30 { 0 } else { 255 }; 3]));
        let soft = apply(Kind::Blur, &edge, 0);
        assert!((1..254).contains(&soft.get_pixel(30, 30)[0]));
    }

    #[test]
    fn scan_is_seeded_and_sepia() {
        let img = gradient(120, 90);
        let a = apply(Kind::Scan, &img, seed_of("a.jpg"));
        assert_eq!(a, apply(Kind::Scan, &img, seed_of("a.jpg")));
        assert_ne!(a, apply(Kind::Scan, &img, seed_of("b.jpg")));
        // Sepia: red over green over blue.
        let p = a.get_pixel(60, 45);
        assert!(p[0] > p[1] && p[1] > p[2], "{p:?}");
        // The noise has the asked spread: sigma 8 before the blur.
        let mut g = Gaussian::new(3);
        let draws: Vec<f32> = (0..20_000).map(|_| g.next()).collect();
        let mean = draws.iter().sum::<f32>() / draws.len() as f32;
        let var = draws.iter().map(|d| (d - mean).powi(2)).sum::<f32>() / draws.len() as f32;
        assert!(
            mean.abs() < 0.03 && (var - 1.0).abs() < 0.05,
            "{mean} {var}"
        );
    }
}
