//! The evaluation's plots, as SVG: MAE per age band, and the gate's trade-off as the
//! threshold moves (DET-style: minors let through against adults asked for ID).

use std::path::Path;

use plotters::prelude::*;

use super::Report;
use crate::domain::AgeBand;

/// A bar chart of MAE per age band.
pub fn write_band_plot(report: &Report, path: &Path) -> Result<(), String> {
    let bands: Vec<(&str, f64, usize)> = AgeBand::ALL
        .iter()
        .map(|band| {
            let s = report.bands.get(band.name());
            (
                band.name(),
                s.and_then(|s| s.mae).unwrap_or(0.0),
                s.map_or(0, |s| s.n),
            )
        })
        .collect();
    let top = bands.iter().map(|b| b.1).fold(1.0, f64::max) * 1.2;
    let root = SVGBackend::new(path, (720, 420)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let title = format!(
        "MAE by age band (overall {:.2} years, n = {})",
        report.mae.unwrap_or(f64::NAN),
        report.n_estimated
    );
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(50)
        // 0..=5: one segment per band (a range's end is a segment of its own).
        .build_cartesian_2d((0..bands.len() - 1).into_segmented(), 0.0..top)
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .disable_x_mesh()
        .y_desc("MAE (years)")
        .x_desc("true age")
        .x_label_formatter(&|v| match v {
            SegmentValue::CenterOf(i) | SegmentValue::Exact(i) => bands
                .get(*i)
                .map_or(String::new(), |b| format!("{} (n={})", b.0, b.2)),
            SegmentValue::Last => String::new(),
        })
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(
            Histogram::vertical(&chart)
                .style(RGBColor(60, 110, 170).filled())
                .margin(8)
                .data(bands.iter().enumerate().map(|(i, b)| (i, b.1))),
        )
        .map_err(|e| e.to_string())?;
    root.present().map_err(|e| e.to_string())
}

/// The floor of the log axis: a rate of 0 is drawn here.
const FPR_FLOOR: f64 = 1e-4;

/// Minor FPR (log) against adult referral as the challenge threshold moves from 18 to 35,
/// with the board's own operating point marked.
pub fn write_det_plot(report: &Report, path: &Path) -> Result<(), String> {
    let points: Vec<(f64, f64, u8)> = report
        .nist
        .challenge
        .rows
        .iter()
        .filter_map(|r| {
            Some((
                r.adult_challenge_rate?,
                r.minor_fpr?.max(FPR_FLOOR),
                r.threshold,
            ))
        })
        .collect();
    let root = SVGBackend::new(path, (720, 480)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| e.to_string())?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            "Under-18s let through vs adults 25+ asked for ID, as the threshold moves",
            ("sans-serif", 18),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(0.0f64..1.0f64, (FPR_FLOOR..1.0f64).log_scale())
        .map_err(|e| e.to_string())?;
    chart
        .configure_mesh()
        .x_desc("adults 25+ challenged (estimate under T)")
        .y_desc("under-18s estimated T or over (log)")
        .draw()
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(LineSeries::new(
            points.iter().map(|&(x, y, _)| (x, y)),
            RGBColor(60, 110, 170).stroke_width(2),
        ))
        .map_err(|e| e.to_string())?;
    chart
        .draw_series(points.iter().filter(|p| p.2 % 3 == 0).map(|&(x, y, t)| {
            EmptyElement::at((x, y))
                + Circle::new((0, 0), 3, RGBColor(60, 110, 170).filled())
                + Text::new(format!("T={t}"), (6, -10), ("sans-serif", 12))
        }))
        .map_err(|e| e.to_string())?;
    if let (Some(x), Some(y)) = (
        report.gate.adult25_referral_rate,
        report.gate.challenge25_fpr,
    ) {
        let label = format!("this board ({})", report.policy.rule);
        chart
            .draw_series(std::iter::once(
                EmptyElement::at((x, y.max(FPR_FLOOR)))
                    + Cross::new((0, 0), 6, RED.stroke_width(2))
                    + Text::new(label, (8, 4), ("sans-serif", 13)),
            ))
            .map_err(|e| e.to_string())?;
    }
    root.present().map_err(|e| e.to_string())
}
