//! PNG plots (pure Rust rendering; text uses a system TrueType font when one is found).

use plotters::prelude::*;
use recurrent::models::fit::EpochRecord;
use recurrent::{Error, Result};
use std::path::Path;

/// Registers a sans-serif font for labels if the system has one; returns whether it did.
fn font_available() -> bool {
    static FONT: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *FONT.get_or_init(|| {
        const CANDIDATES: [&str; 4] = [
            "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
            "/usr/share/fonts/TTF/DejaVuSans.ttf",
            "/usr/share/fonts/dejavu/DejaVuSans.ttf",
            "/Library/Fonts/Arial.ttf",
        ];
        for c in CANDIDATES {
            if let Ok(bytes) = std::fs::read(c) {
                let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
                if plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok() {
                    return true;
                }
            }
        }
        false
    })
}

fn plot_err(path: &Path, e: impl std::fmt::Display) -> Error {
    Error::File {
        path: path.display().to_string(),
        message: format!("cannot draw plot: {e}"),
    }
}

/// A named line: `(name, points, colour)`.
pub type Series<'a> = (&'a str, Vec<(f64, f64)>, RGBColor);

/// Draws named line series (`(name, points, colour)`) as the bytes of a PNG image
/// (`path`, where it will be written, names it in errors).
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
) -> Result<Vec<u8>> {
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y0, mut y1) = (
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::INFINITY,
        f64::NEG_INFINITY,
    );
    for &(x, y) in pts {
        if y.is_finite() {
            x0 = x0.min(x);
            x1 = x1.max(x);
            y0 = y0.min(y);
            y1 = y1.max(y);
        }
    }
    if !x0.is_finite() {
        return Err(plot_err(path, "nothing to plot"));
    }
    if x1 <= x0 {
        x1 = x0 + 1.0;
    }
    let pad = ((y1 - y0) * 0.05).max(1e-9);
    const SIZE: (u32, u32) = (960, 540);
    let mut pixels = vec![0u8; 3 * SIZE.0 as usize * SIZE.1 as usize];
    {
        let text = font_available();
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        root.fill(&WHITE).map_err(|e| plot_err(path, e))?;
        let mut builder = ChartBuilder::on(&root);
        builder
            .margin(15)
            .x_label_area_size(if text { 40 } else { 10 })
            .y_label_area_size(if text { 70 } else { 10 });
        if text {
            builder.caption(title, ("sans-serif", 22));
        }
        let mut chart = builder
            .build_cartesian_2d(x0..x1, (y0 - pad)..(y1 + pad))
            .map_err(|e| plot_err(path, e))?;
        let mut mesh = chart.configure_mesh();
        if text {
            mesh.x_desc(x_label).y_desc(y_label);
        } else {
            mesh.disable_x_mesh()
                .disable_y_mesh()
                .x_labels(0)
                .y_labels(0);
        }
        mesh.draw().map_err(|e| plot_err(path, e))?;
        for (name, points, colour) in series {
            let colour = *colour;
            let s = chart
                .draw_series(LineSeries::new(
                    points.iter().copied().filter(|p| p.1.is_finite()),
                    colour.stroke_width(2),
                ))
                .map_err(|e| plot_err(path, e))?;
            if text {
                s.label(*name).legend(move |(x, y)| {
                    PathElement::new(vec![(x, y), (x + 20, y)], colour.stroke_width(2))
                });
            }
        }
        if text {
            chart
                .configure_series_labels()
                .position(SeriesLabelPosition::UpperLeft)
                .background_style(WHITE.mix(0.8))
                .border_style(BLACK)
                .draw()
                .map_err(|e| plot_err(path, e))?;
        }
        root.present().map_err(|e| plot_err(path, e))?;
    }
    let image = image::RgbImage::from_raw(SIZE.0, SIZE.1, pixels)
        .ok_or_else(|| plot_err(path, "pixel buffer of the wrong size"))?;
    let mut png = std::io::Cursor::new(Vec::new());
    image
        .write_to(&mut png, image::ImageFormat::Png)
        .map_err(|e| plot_err(path, e))?;
    Ok(png.into_inner())
}

/// Training and validation loss per epoch, as PNG bytes.
pub fn loss_curves(path: &Path, history: &[EpochRecord]) -> Result<Vec<u8>> {
    let train: Vec<(f64, f64)> = history
        .iter()
        .map(|r| (r.epoch as f64, r.train_loss))
        .collect();
    let val: Vec<(f64, f64)> = history
        .iter()
        .map(|r| (r.epoch as f64, r.val_loss))
        .collect();
    lines(
        path,
        "Loss",
        "epoch",
        "loss",
        &[("training", train, BLUE), ("validation", val, RED)],
    )
}
