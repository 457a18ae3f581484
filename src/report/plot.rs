//! PNG plots without Python: memory against depth per method (`sll bench memory
//! --plot`, from [`crate::bench::memory::plot_png`]) and learning curves of several runs (`sll report --plot`), drawn with
//! `plotters` into an RGB buffer and written with the `image` crate's PNG encoder.
//!
//! Text uses a font compiled into the binary (DejaVu Sans cut down to ASCII, 10 KB,
//! `assets/`), so nothing is needed from the system (no fontconfig, no freetype).

use super::compare::RunRecord;
use anyhow::{bail, Context, Result};
use image::codecs::png::{CompressionType, FilterType, PngEncoder};
use image::ImageEncoder;
use plotters::coord::Shift;
use plotters::prelude::*;
use std::path::Path;

/// The font every plot's text is drawn in.
const FONT: &[u8] = include_bytes!("../../assets/DejaVuSans-ascii.ttf");
/// Picture size in pixels (two panels side by side).
const SIZE: (u32, u32) = (1200, 450);
/// Line colours, one per series.
const COLORS: [RGBColor; 6] = [
    RGBColor(31, 119, 180),
    RGBColor(214, 39, 40),
    RGBColor(44, 160, 44),
    RGBColor(148, 103, 189),
    RGBColor(255, 127, 14),
    RGBColor(23, 190, 207),
];

/// Makes [`FONT`] plotters' "sans-serif" (registering it again only replaces it).
fn register_font() -> Result<()> {
    plotters::style::register_font("sans-serif", FontStyle::Normal, FONT)
        .map_err(|_| anyhow::anyhow!("the compiled-in plot font does not parse"))
}

/// One line of a panel: a label and its (x, y) points.
type Series = (String, Vec<(f64, f64)>);

/// Draws `series` into `area` with a title and axis labels; y starts at 0 unless `y_from_data`.
fn panel(
    area: &DrawingArea<BitMapBackend<'_>, Shift>,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    y_from_data: bool,
) -> Result<()> {
    let points = || series.iter().flat_map(|(_, p)| p.iter().copied());
    let (x_max, y_max) = points().fold((0.0f64, 0.0f64), |(x, y), (px, py)| (x.max(px), y.max(py)));
    let y_min = if y_from_data {
        points().map(|p| p.1).fold(f64::INFINITY, f64::min)
    } else {
        0.0
    };
    let y_span = (y_max - y_min).max(1e-9);
    let mut chart = ChartBuilder::on(area)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(
            0.0..x_max.max(1e-9) * 1.05,
            y_min - 0.05 * y_span..y_max + 0.05 * y_span,
        )
        .map_err(|e| anyhow::anyhow!("cannot draw the chart: {e}"))?;
    chart
        .configure_mesh()
        .light_line_style(WHITE)
        .x_desc(x_label)
        .y_desc(y_label)
        .label_style(("sans-serif", 14))
        .draw()
        .map_err(|e| anyhow::anyhow!("cannot draw the axes: {e}"))?;
    for (i, (label, pts)) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), color.stroke_width(2)))
            .map_err(|e| anyhow::anyhow!("cannot draw a line: {e}"))?
            .label(label.as_str())
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color.stroke_width(2)));
        chart
            .draw_series(pts.iter().map(|&p| Circle::new(p, 3, color.filled())))
            .map_err(|e| anyhow::anyhow!("cannot draw points: {e}"))?;
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .label_font(("sans-serif", 14))
        .position(SeriesLabelPosition::UpperLeft)
        .draw()
        .map_err(|e| anyhow::anyhow!("cannot draw the legend: {e}"))?;
    Ok(())
}

/// Renders two panels side by side and writes them to `path` as PNG.
fn two_panels(
    path: &Path,
    draw: impl FnOnce(
        &DrawingArea<BitMapBackend<'_>, Shift>,
        &DrawingArea<BitMapBackend<'_>, Shift>,
    ) -> Result<()>,
) -> Result<()> {
    register_font()?;
    let mut buffer = vec![0u8; (SIZE.0 * SIZE.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, SIZE).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow::anyhow!("cannot draw: {e}"))?;
        let (left, right) = root.split_horizontally(SIZE.0 / 2);
        draw(&left, &right)?;
        root.present().map_err(|e| anyhow::anyhow!("cannot draw: {e}"))?;
    }
    write_png(&buffer, SIZE, path)
}

/// Encodes an RGB `buffer` of `size` pixels as PNG and writes it to `path` atomically.
fn write_png(buffer: &[u8], size: (u32, u32), path: &Path) -> Result<()> {
    let mut png = vec![];
    let encoder = PngEncoder::new_with_quality(&mut png, CompressionType::Best, FilterType::Adaptive);
    encoder
        .write_image(buffer, size.0, size.1, image::ExtendedColorType::Rgb8)
        .with_context(|| format!("cannot encode {}", path.display()))?;
    crate::io::write_atomic(path, &png)
}

/// Size in pixels of a one-panel picture ([`sweep_accuracy`]).
pub const ONE_PANEL_SIZE: (u32, u32) = (800, 450);

/// A sweep's test accuracy against one of its numeric grid keys (`x_label`), one line
/// per `series` (a label, e.g. `method=sll`, and its (x, accuracy %) points), in one
/// panel (`sll sweep`'s `results.png`).
pub fn sweep_accuracy(
    series: &[(String, Vec<(f64, f64)>)],
    x_label: &str,
    title: &str,
    path: &Path,
) -> Result<()> {
    if series.iter().all(|(_, pts)| pts.is_empty()) {
        bail!("nothing to plot");
    }
    register_font()?;
    let size = ONE_PANEL_SIZE;
    let mut buffer = vec![0u8; (size.0 * size.1 * 3) as usize];
    {
        let root = BitMapBackend::with_buffer(&mut buffer, size).into_drawing_area();
        root.fill(&WHITE)
            .map_err(|e| anyhow::anyhow!("cannot draw: {e}"))?;
        panel(&root, title, x_label, "test accuracy %", series, true)?;
        root.present().map_err(|e| anyhow::anyhow!("cannot draw: {e}"))?;
    }
    write_png(&buffer, size, path)
}

const MIB: f64 = 1024.0 * 1024.0;

/// One measurement of a memory-against-depth plot.
#[derive(Debug, Clone, PartialEq)]
pub struct MemoryPoint {
    /// The line it belongs to (a method).
    pub method: String,
    /// The network's depth (x).
    pub depth: usize,
    /// Peak bytes of activations and workspace (left panel).
    pub activation_bytes: usize,
    /// Parameters, gradients, optimizer state and activations (right panel).
    pub total_bytes: usize,
}

/// Memory against depth of `model` at minibatch `batch`, one line per method: the
/// activation/workspace peak (left) and the total of parameters, gradients, optimizer
/// state and activations (right).
pub fn memory_vs_depth(model: &str, batch: usize, points: &[MemoryPoint], path: &Path) -> Result<()> {
    if points.is_empty() {
        bail!("nothing to plot");
    }
    let mut methods: Vec<&str> = vec![];
    for p in points {
        if !methods.contains(&p.method.as_str()) {
            methods.push(&p.method);
        }
    }
    let series = |value: &dyn Fn(&MemoryPoint) -> usize| -> Vec<Series> {
        methods
            .iter()
            .map(|m| {
                let pts = points
                    .iter()
                    .filter(|p| p.method == *m)
                    .map(|p| (p.depth as f64, value(p) as f64 / MIB))
                    .collect();
                (m.to_string(), pts)
            })
            .collect()
    };
    let activations = series(&|p| p.activation_bytes);
    let total = series(&|p| p.total_bytes);
    two_panels(path, |left, right| {
        let title = format!("{model}, batch {batch}: activations + workspace");
        panel(left, &title, "depth", "peak MiB", &activations, false)?;
        let title = format!("{model}: params + grads + optimizer + activations");
        panel(right, &title, "depth", "MiB", &total, false)
    })
}

/// Test accuracy of several runs against the epoch (left) and against wall-clock
/// seconds since the start of training (right).
pub fn learning_curves(runs: &[RunRecord], path: &Path) -> Result<()> {
    if runs.iter().all(|r| r.metrics.is_empty()) {
        bail!("the runs have no epochs to plot");
    }
    let by_epoch: Vec<Series> = runs
        .iter()
        .map(|r| {
            let pts = r
                .metrics
                .iter()
                .map(|m| (m.epoch as f64, 100.0 * m.test_accuracy))
                .collect();
            (r.label(), pts)
        })
        .collect();
    let by_time: Vec<Series> = runs
        .iter()
        .map(|r| {
            let pts = r.wall_times().into_iter().zip(&r.metrics);
            (
                r.label(),
                pts.map(|(t, m)| (t, 100.0 * m.test_accuracy)).collect(),
            )
        })
        .collect();
    two_panels(path, |left, right| {
        panel(
            left,
            "test accuracy by epoch",
            "epoch",
            "test accuracy %",
            &by_epoch,
            true,
        )?;
        panel(
            right,
            "test accuracy by wall time",
            "seconds",
            "test accuracy %",
            &by_time,
            true,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_plot_is_a_png_of_the_stated_size() {
        let result = |method: &str, depth: usize, act: usize| MemoryPoint {
            method: method.into(),
            depth,
            activation_bytes: act,
            total_bytes: (depth << 24) + act,
        };
        let results = [
            result("sll", 2, 3 << 20),
            result("sll", 4, 3 << 20),
            result("bp", 2, 4 << 20),
            result("bp", 4, 8 << 20),
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("memory.png");
        memory_vs_depth("mlp", 128, &results, &path).unwrap();
        let picture = image::open(&path).unwrap().to_rgb8();
        assert_eq!(picture.dimensions(), SIZE);
        // Not blank: some pixels are neither white nor grey (the coloured lines).
        assert!(picture.pixels().any(|p| p[0] != p[1] || p[1] != p[2]));
        assert!(memory_vs_depth("mlp", 128, &[], &path).is_err());
    }
}
