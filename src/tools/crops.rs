//! `agegate crops`: the aligned face crops of a manifest, written as PNG files with a new
//! manifest, so the age model is trained on exactly what the device will feed it.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::align::aligned_crop;
use crate::detect::{main_face, FaceDetector};
use crate::photo::load_rgb_within;
use crate::tools::manifest::Entry;

#[derive(Debug, Default, serde::Serialize)]
pub struct CropSummary {
    pub written: usize,
    pub no_face: usize,
    pub failed: Vec<String>,
    pub manifest: PathBuf,
}

/// Writes `out/<rel_path>.png` for each entry with a face and `out/manifest.csv` listing
/// them with the original labels. `progress` is called after each entry.
pub fn write_crops(
    detector: &FaceDetector,
    entries: &[Entry],
    size: u32,
    max_pixels: u64,
    out: &Path,
    mut progress: impl FnMut(),
) -> std::io::Result<CropSummary> {
    std::fs::create_dir_all(out)?;
    let manifest_path = out.join("manifest.csv");
    let mut manifest = std::io::BufWriter::new(std::fs::File::create(&manifest_path)?);
    writeln!(manifest, "path,age,gender,race,subject")?;
    let mut summary = CropSummary {
        manifest: manifest_path,
        ..Default::default()
    };
    for entry in entries {
        progress();
        let photo = match load_rgb_within(&entry.path, max_pixels) {
            Ok(p) => p,
            Err(e) => {
                summary.failed.push(e.to_string());
                continue;
            }
        };
        let faces = match detector.detect(&photo) {
            Ok(f) => f,
            Err(e) => {
                summary
                    .failed
                    .push(format!("{}: {e}", entry.path.display()));
                continue;
            }
        };
        let Some(main) = main_face(&faces, photo.width(), photo.height()) else {
            summary.no_face += 1;
            continue;
        };
        let crop = aligned_crop(&photo, &faces[main], size);
        let rel = Path::new(&entry.rel_path).with_extension("png");
        let target = out.join(&rel);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crop.save(&target).map_err(std::io::Error::other)?;
        let field = |v: &Option<String>| v.clone().unwrap_or_default();
        writeln!(
            manifest,
            "{},{},{},{},{}",
            rel.display(),
            entry.age,
            field(&entry.gender),
            field(&entry.race),
            field(&entry.subject)
        )?;
        summary.written += 1;
    }
    manifest.flush()?;
    Ok(summary)
}
