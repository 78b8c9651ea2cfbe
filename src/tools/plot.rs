//! Line charts written as PNG and SVG, with DejaVu Sans embedded in the binary.
//!
//! Every plot of densetrain is a [`Figure`]: one or more panels side by side,
//! each with its own axes, line series and vertical markers. Text is drawn by
//! plotters' `ab_glyph` renderer from the embedded font, so neither building
//! nor running needs a system font library.

use crate::train::{EpochRecord, History, StopReason};
use anyhow::{Context, Result, anyhow, bail};
use plotters::coord::Shift;
use plotters::coord::ranged1d::{AsRangedCoord, Ranged, ValueFormatter};
use plotters::prelude::*;
use plotters::style::FontStyle;
use std::path::Path;
use std::sync::Once;

/// DejaVu Sans 2.37 (Bitstream Vera licence; see `assets/fonts/`).
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/fonts/DejaVuSans.ttf");

/// Font family name the charts ask for, registered with [`DEJAVU_SANS`].
const FONT: &str = "sans-serif";

/// Width and height of one panel in pixels.
const PANEL_SIZE: (u32, u32) = (640, 480);

/// Line colours: the ten colours of Matplotlib's `tab10` cycle, in its order.
const PALETTE: [RGBColor; 10] = [
    RGBColor(31, 119, 180),
    RGBColor(255, 127, 14),
    RGBColor(44, 160, 44),
    RGBColor(214, 39, 40),
    RGBColor(148, 103, 189),
    RGBColor(140, 86, 75),
    RGBColor(227, 119, 194),
    RGBColor(127, 127, 127),
    RGBColor(188, 189, 34),
    RGBColor(23, 190, 207),
];

/// Drawing style of a series.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LineStyle {
    /// A solid line.
    Solid,
    /// A dashed line.
    Dashed,
    /// A thin, light line (raw values behind a smoothed curve).
    Faint,
    /// Dots only, no line.
    Points,
}

/// One line of a panel.
#[derive(Clone, Debug, PartialEq)]
pub struct Series {
    /// Legend entry.
    pub name: String,
    /// `(x, y)` points; non-finite points are left out, so they break nothing.
    pub points: Vec<(f64, f64)>,
    /// Index into the colour cycle.
    pub color: usize,
    /// Line style.
    pub style: LineStyle,
}

/// A vertical line across a panel at `x`, named in the legend.
#[derive(Clone, Debug, PartialEq)]
pub struct Marker {
    /// Position on the x axis.
    pub x: f64,
    /// Legend entry.
    pub label: String,
    /// Index into the colour cycle.
    pub color: usize,
}

/// One chart: axes, series and markers.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Panel {
    /// Caption above the chart.
    pub title: String,
    /// Description of the x axis, with its unit.
    pub x_label: String,
    /// Description of the y axis, with its unit.
    pub y_label: String,
    /// Logarithmic x axis.
    pub x_log: bool,
    /// The x axis counts whole things (epochs, folds): fractional ticks get no label.
    pub x_whole: bool,
    /// Logarithmic y axis (positive values only; others are left out).
    pub y_log: bool,
    /// Upper end of the y axis; higher values are drawn at this bound.
    pub y_max: Option<f64>,
    /// The lines.
    pub series: Vec<Series>,
    /// Vertical markers.
    pub markers: Vec<Marker>,
}

/// Panels drawn side by side under a common title.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Figure {
    /// Title above all panels.
    pub title: String,
    /// The panels, left to right.
    pub panels: Vec<Panel>,
}

/// Writes `figure` to `stem.png` and `stem.svg` in `dir`, returning both paths.
pub fn write_figure(figure: &Figure, dir: &Path, stem: &str) -> Result<[std::path::PathBuf; 2]> {
    if figure.panels.is_empty() {
        bail!("a figure needs at least one panel");
    }
    register_font()?;
    let width = PANEL_SIZE.0 * figure.panels.len() as u32;
    let size = (width, PANEL_SIZE.1);
    let png = dir.join(format!("{stem}.png"));
    let svg = dir.join(format!("{stem}.svg"));
    {
        let root = BitMapBackend::new(&png, size).into_drawing_area();
        draw_figure(&root, figure)?;
        root.present()
            .map_err(|e| anyhow!("failed to write {}: {e}", png.display()))?;
    }
    {
        let root = SVGBackend::new(&svg, size).into_drawing_area();
        draw_figure(&root, figure)?;
        root.present()
            .map_err(|e| anyhow!("failed to write {}: {e}", svg.display()))?;
    }
    Ok([png, svg])
}

fn register_font() -> Result<()> {
    static REGISTER: Once = Once::new();
    let mut result = Ok(());
    REGISTER.call_once(|| {
        result = plotters::style::register_font(FONT, FontStyle::Normal, DEJAVU_SANS)
            .map_err(|_| anyhow!("the embedded DejaVu Sans font could not be read"));
    });
    result
}

fn draw_figure<DB: DrawingBackend>(root: &DrawingArea<DB, Shift>, figure: &Figure) -> Result<()> {
    root.fill(&WHITE).map_err(draw_error)?;
    let body = if figure.title.is_empty() {
        root.clone()
    } else {
        root.titled(&figure.title, (FONT, 24).into_font())
            .map_err(draw_error)?
    };
    let areas = body.split_evenly((1, figure.panels.len()));
    for (area, panel) in areas.iter().zip(&figure.panels) {
        draw_panel(area, panel).with_context(|| format!("failed to draw '{}'", panel.title))?;
    }
    Ok(())
}

/// Finite points of a series, with non-positive coordinates dropped on log axes.
fn visible_points(panel: &Panel, series: &Series) -> Vec<(f64, f64)> {
    series
        .points
        .iter()
        .copied()
        .filter(|&(x, y)| x.is_finite() && y.is_finite())
        .filter(|&(x, _)| !panel.x_log || x > 0.0)
        .filter(|&(_, y)| !panel.y_log || y > 0.0)
        .collect()
}

/// Returns the axis range covering `values` with a margin, on a log or linear scale.
fn axis_range(values: impl Iterator<Item = f64>, log: bool) -> (f64, f64) {
    let (mut low, mut high) = values.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
        (lo.min(v), hi.max(v))
    });
    if !low.is_finite() || !high.is_finite() {
        return if log { (0.1, 10.0) } else { (0.0, 1.0) };
    }
    if log {
        if high / low < 10.0 {
            // Span at least a decade, so the axis holds a tick at 1, 2 or 5 times a power
            // of ten, the only ticks that get a label.
            let widen = (10.0 / (high / low)).sqrt();
            low /= widen;
            high *= widen;
        } else {
            let margin = (high / low).powf(0.03);
            low /= margin;
            high *= margin;
        }
    } else {
        let span = high - low;
        let margin = if span > 0.0 {
            span * 0.05
        } else {
            low.abs().max(1.0) * 0.05
        };
        low -= margin;
        high += margin;
    }
    (low, high)
}

fn draw_panel<DB: DrawingBackend>(area: &DrawingArea<DB, Shift>, panel: &Panel) -> Result<()> {
    let cap = panel.y_max.unwrap_or(f64::INFINITY);
    let points: Vec<Vec<(f64, f64)>> = panel
        .series
        .iter()
        .map(|s| {
            let mut points = visible_points(panel, s);
            for p in &mut points {
                p.1 = p.1.min(cap);
            }
            points
        })
        .collect();
    let xs = points.iter().flatten().map(|p| p.0).chain(
        panel
            .markers
            .iter()
            .map(|m| m.x)
            .filter(|&x| x.is_finite() && (!panel.x_log || x > 0.0)),
    );
    let (x_low, x_high) = axis_range(xs, panel.x_log);
    let (y_low, y_high) = axis_range(points.iter().flatten().map(|p| p.1), panel.y_log);
    match (panel.x_log, panel.y_log) {
        (false, false) => draw_chart(area, panel, &points, x_low..x_high, y_low..y_high),
        (true, false) => draw_chart(
            area,
            panel,
            &points,
            (x_low..x_high).log_scale(),
            y_low..y_high,
        ),
        (false, true) => draw_chart(
            area,
            panel,
            &points,
            x_low..x_high,
            (y_low..y_high).log_scale(),
        ),
        (true, true) => draw_chart(
            area,
            panel,
            &points,
            (x_low..x_high).log_scale(),
            (y_low..y_high).log_scale(),
        ),
    }
}

fn draw_chart<DB, X, Y>(
    area: &DrawingArea<DB, Shift>,
    panel: &Panel,
    points: &[Vec<(f64, f64)>],
    x_range: X,
    y_range: Y,
) -> Result<()>
where
    DB: DrawingBackend,
    X: AsRangedCoord<Value = f64>,
    Y: AsRangedCoord<Value = f64>,
    X::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
    Y::CoordDescType: Ranged<ValueType = f64> + ValueFormatter<f64>,
{
    let legend_position = legend_position(points);
    let x_format = |v: &f64| {
        if panel.x_whole && v.fract().abs() > 1e-9 {
            String::new()
        } else if panel.x_log {
            format_log_tick(*v)
        } else {
            format_tick(*v)
        }
    };
    let y_format = |v: &f64| {
        if panel.y_log {
            format_log_tick(*v)
        } else {
            format_tick(*v)
        }
    };
    let mut chart = ChartBuilder::on(area)
        .caption(&panel.title, (FONT, 20).into_font())
        .margin(12)
        .x_label_area_size(48)
        .y_label_area_size(72)
        .build_cartesian_2d(x_range, y_range)
        .map_err(draw_error)?;
    chart
        .configure_mesh()
        .x_desc(&panel.x_label)
        .y_desc(&panel.y_label)
        .label_style((FONT, 14).into_font())
        .axis_desc_style((FONT, 16).into_font())
        .x_labels(if panel.x_log { 30 } else { 10 })
        .y_labels(8)
        .x_label_formatter(&x_format)
        .y_label_formatter(&y_format)
        // A log axis already has a line at every tick; light lines between
        // them crowd into grey bands near each power of ten.
        .x_max_light_lines(if panel.x_log { 0 } else { 4 })
        .light_line_style(RGBColor(235, 235, 235))
        .draw()
        .map_err(draw_error)?;

    // Names of `Points` series, drawn beside their points after every series.
    let mut point_names: Vec<((f64, f64), &str)> = Vec::new();
    for (series, points) in panel.series.iter().zip(points) {
        let color = PALETTE[series.color % PALETTE.len()];
        let drawn = match series.style {
            LineStyle::Solid => chart.draw_series(LineSeries::new(
                points.iter().copied(),
                color.stroke_width(2),
            )),
            LineStyle::Faint => chart.draw_series(LineSeries::new(
                points.iter().copied(),
                color.mix(0.35).stroke_width(1),
            )),
            LineStyle::Dashed => chart.draw_series(DashedLineSeries::new(
                points.iter().copied(),
                8,
                5,
                color.stroke_width(2),
            )),
            LineStyle::Points => {
                chart.draw_series(points.iter().map(|&p| Circle::new(p, 4, color.filled())))
            }
        }
        .map_err(draw_error)?;
        if series.style == LineStyle::Points {
            // Points carry their name beside them instead of in the legend.
            if !series.name.is_empty() {
                point_names.extend(points.iter().map(|&p| (p, series.name.as_str())));
            }
            continue;
        }
        if !series.name.is_empty() {
            let style = match series.style {
                LineStyle::Faint => color.mix(0.35).stroke_width(2),
                _ => color.stroke_width(2),
            };
            drawn
                .label(&series.name)
                .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], style));
        }
    }
    let y_bounds = chart.y_range();
    for marker in &panel.markers {
        if !marker.x.is_finite() {
            continue;
        }
        let color = PALETTE[marker.color % PALETTE.len()];
        let line = vec![(marker.x, y_bounds.start), (marker.x, y_bounds.end)];
        chart
            .draw_series(DashedLineSeries::new(line, 4, 4, color.stroke_width(2)))
            .map_err(draw_error)?
            .label(&marker.label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    let font = (FONT, POINT_NAME_SIZE).into_font().color(&BLACK);
    let pixels = chart.plotting_area().get_pixel_range();
    let anchors: Vec<(i32, i32)> = point_names
        .iter()
        .map(|(p, _)| chart.backend_coord(p))
        .collect();
    let widths: Vec<i32> = point_names
        .iter()
        .map(|(_, name)| name_width(name))
        .collect();
    let offsets = place_names(&anchors, &widths, pixels);
    chart
        .draw_series(point_names.iter().zip(offsets).map(|(&(p, name), offset)| {
            EmptyElement::at(p) + Text::new(name.to_string(), offset, font.clone())
        }))
        .map_err(draw_error)?;

    let has_legend = panel
        .series
        .iter()
        .any(|s| !s.name.is_empty() && s.style != LineStyle::Points)
        || !panel.markers.is_empty();
    if has_legend {
        chart
            .configure_series_labels()
            .position(legend_position)
            .label_font((FONT, 14).into_font())
            .background_style(WHITE.mix(0.85))
            .border_style(RGBColor(200, 200, 200))
            .draw()
            .map_err(draw_error)?;
    }
    Ok(())
}

/// Font size of the names beside points, in pixels.
const POINT_NAME_SIZE: u32 = 13;

/// Estimates the width in pixels of `name` at [`POINT_NAME_SIZE`]: about 6
/// pixels per character, as measured on drawn sweep labels.
fn name_width(name: &str) -> i32 {
    name.chars().count() as i32 * 6 + 4
}

/// Returns where to draw each point's name, as an offset of its top-left
/// corner from the point (`anchors`, in pixels), so that names stay inside
/// the plotting area (`pixels`: x range, y range) and do not overlap.
///
/// A name goes right of its point unless it would cross the right edge.
/// Vertically it takes the first free slot of above, below, then further
/// above and below. When every slot is taken, it keeps the first one.
fn place_names(
    anchors: &[(i32, i32)],
    widths: &[i32],
    pixels: (std::ops::Range<i32>, std::ops::Range<i32>),
) -> Vec<(i32, i32)> {
    const HEIGHT: i32 = POINT_NAME_SIZE as i32 + 3;
    const GAP: i32 = 6;
    let (x_pixels, y_pixels) = pixels;
    let mut order: Vec<usize> = (0..anchors.len()).collect();
    order.sort_by_key(|&i| (anchors[i].1, anchors[i].0));
    let mut placed: Vec<(i32, i32, i32, i32)> = Vec::new();
    let mut offsets = vec![(0, 0); anchors.len()];
    for i in order {
        let ((x, y), width) = (anchors[i], widths[i]);
        let dx = if x + GAP + width > x_pixels.end {
            -GAP - width
        } else {
            GAP
        };
        let slots = [
            -HEIGHT,
            4,
            -2 * HEIGHT,
            4 + HEIGHT,
            -3 * HEIGHT,
            4 + 2 * HEIGHT,
        ];
        let inside = |dy: i32| y + dy >= y_pixels.start && y + dy + HEIGHT <= y_pixels.end;
        let free = |dy: i32| {
            let (left, top) = (x + dx, y + dy);
            placed.iter().all(|&(l, t, r, b)| {
                left >= r || left + width <= l || top >= b || top + HEIGHT <= t
            })
        };
        let dy = slots
            .iter()
            .copied()
            .find(|&dy| inside(dy) && free(dy))
            .or_else(|| slots.iter().copied().find(|&dy| inside(dy)))
            .unwrap_or(slots[0]);
        placed.push((x + dx, y + dy, x + dx + width, y + dy + HEIGHT));
        offsets[i] = (dx, dy);
    }
    offsets
}

/// Formats an axis tick: whole numbers without decimals, very small or large
/// values in scientific notation, others with at most four decimals.
fn format_tick(value: f64) -> String {
    let size = value.abs();
    if value == 0.0 {
        return "0".to_string();
    }
    if !(1e-3..1e5).contains(&size) {
        return format!("{value:.0e}");
    }
    if (value - value.round()).abs() < 1e-9 * size.max(1.0) {
        return format!("{value:.0}");
    }
    let text = format!("{value:.4}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// Formats a tick of a log axis: 1, 2 and 5 times a power of ten get a
/// label, other ticks none, so the labels do not crowd.
fn format_log_tick(value: f64) -> String {
    if value.is_nan() || value <= 0.0 {
        return String::new();
    }
    let mantissa = value / 10f64.powf(value.log10().floor());
    let labelled = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .any(|m| (mantissa / m - 1.0).abs() < 1e-6);
    if labelled {
        format_tick(value)
    } else {
        String::new()
    }
}

/// Puts the legend in the lower right corner when the lines end high in the
/// panel (rising curves such as accuracy), else in the upper right.
fn legend_position(points: &[Vec<(f64, f64)>]) -> SeriesLabelPosition {
    let all = || points.iter().flatten();
    let (x_low, x_high) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.0), hi.max(p.0))
    });
    let (y_low, y_high) = all().fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
        (lo.min(p.1), hi.max(p.1))
    });
    let right = x_low + 0.6 * (x_high - x_low);
    let tail: Vec<f64> = all().filter(|p| p.0 >= right).map(|p| p.1).collect();
    if tail.is_empty() || y_high.is_nan() || y_high <= y_low {
        return SeriesLabelPosition::UpperRight;
    }
    let mean = tail.iter().sum::<f64>() / tail.len() as f64;
    if mean > (y_low + y_high) / 2.0 {
        SeriesLabelPosition::LowerRight
    } else {
        SeriesLabelPosition::UpperRight
    }
}

fn draw_error<E: std::error::Error + Send + Sync>(error: DrawingAreaErrorKind<E>) -> anyhow::Error {
    anyhow!("plotting failed: {error}")
}

/// Describes a loss for axis labels: the cross-entropy in nats, or the mean
/// squared error in squared target units.
pub fn loss_unit(regression: bool) -> &'static str {
    if regression {
        "MSE, target units²"
    } else {
        "cross-entropy, nats"
    }
}

/// Describes the metric for axis labels.
pub fn metric_label(metric_name: &str) -> String {
    match metric_name {
        "accuracy" => "accuracy (fraction correct)".to_string(),
        "mae" => "mean absolute error (target units)".to_string(),
        other => other.to_string(),
    }
}

/// Draws a run's learning curves: loss and metric per epoch, training and
/// validation, with the best epoch and the epoch where training stopped early
/// (or on a non-finite loss) marked.
pub fn learning_curves(history: &History, best_epoch: Option<usize>, stop: &StopReason) -> Figure {
    let regression = history.metric_name == "mae";
    let epochs = &history.epochs;
    let series =
        |name: &str, color: usize, style: LineStyle, pick: &dyn Fn(&EpochRecord) -> f64| Series {
            name: name.to_string(),
            points: epochs.iter().map(|e| (e.epoch as f64, pick(e))).collect(),
            color,
            style,
        };
    let mut loss = vec![series("training", 0, LineStyle::Solid, &|e| e.loss)];
    let mut metric = vec![series("training", 0, LineStyle::Solid, &|e| e.metric)];
    if history.has_validation {
        let val_loss = |e: &EpochRecord| e.val_loss.unwrap_or(f64::NAN);
        let val_metric = |e: &EpochRecord| e.val_metric.unwrap_or(f64::NAN);
        loss.push(series("validation", 1, LineStyle::Dashed, &val_loss));
        metric.push(series("validation", 1, LineStyle::Dashed, &val_metric));
    }
    let mut markers = Vec::new();
    if let Some(best) = best_epoch {
        markers.push(Marker {
            x: best as f64,
            label: format!("best epoch {best}"),
            color: 2,
        });
    }
    let last = epochs.last().map_or(0, |e| e.epoch);
    match stop {
        StopReason::EarlyStopping { .. } => markers.push(Marker {
            x: last as f64,
            label: format!("early stop after epoch {last}"),
            color: 3,
        }),
        StopReason::NonFinite(bad) => markers.push(Marker {
            x: bad.epoch as f64,
            label: format!("non-finite loss in epoch {}", bad.epoch),
            color: 3,
        }),
        StopReason::EpochLimit | StopReason::Interrupted { .. } => {}
    }
    Figure {
        title: format!(
            "Learning curves ({} epochs{})",
            epochs.len(),
            if history.has_validation {
                ""
            } else {
                ", no validation"
            }
        ),
        panels: vec![
            Panel {
                title: "Loss".to_string(),
                x_label: "epoch".to_string(),
                x_whole: true,
                y_label: format!("loss ({})", loss_unit(regression)),
                series: loss,
                markers: markers.clone(),
                ..Panel::default()
            },
            Panel {
                title: metric_label(history.metric_name),
                x_label: "epoch".to_string(),
                x_whole: true,
                y_label: metric_label(history.metric_name),
                series: metric,
                markers,
                ..Panel::default()
            },
        ],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn point_names_do_not_overlap() {
        // Three points close together and one at the right edge.
        let anchors = [(100, 200), (104, 202), (98, 199), (590, 300)];
        let widths = [120, 120, 120, 150];
        let offsets = place_names(&anchors, &widths, (0..600, 0..400));
        let boxes: Vec<(i32, i32, i32, i32)> = anchors
            .iter()
            .zip(&widths)
            .zip(&offsets)
            .map(|((&(x, y), &w), &(dx, dy))| (x + dx, y + dy, x + dx + w, y + dy + 16))
            .collect();
        for (i, a) in boxes.iter().enumerate() {
            assert!(a.0 >= 0, "name {i} leaves the area on the left: {a:?}");
            assert!(a.2 <= 600, "name {i} leaves the area on the right: {a:?}");
            assert!(a.1 >= 0, "name {i} leaves the area at the top: {a:?}");
            assert!(a.3 <= 400, "name {i} leaves the area at the bottom: {a:?}");
            for b in &boxes[i + 1..] {
                let apart = a.0 >= b.2 || a.2 <= b.0 || a.1 >= b.3 || a.3 <= b.1;
                assert!(apart, "names overlap: {a:?} and {b:?}");
            }
        }
        // The name of the point at the right edge goes to its left.
        assert!(offsets[3].0 < 0);
    }

    #[test]
    fn axis_range_pads_linear_and_log() {
        let (low, high) = axis_range([1.0, 3.0].into_iter(), false);
        assert!(low < 1.0, "{low}");
        assert!(high > 3.0, "{high}");
        let (low, high) = axis_range([1e-6, 1.0].into_iter(), true);
        assert!(low < 1e-6, "{low}");
        assert!(low > 0.0, "{low}");
        assert!(high > 1.0, "{high}");
    }

    #[test]
    fn ticks_read_naturally() {
        assert_eq!(format_tick(2.0), "2");
        assert_eq!(format_tick(0.25), "0.25");
        assert_eq!(format_tick(1e-7), "1e-7");
        assert_eq!(format_tick(50000.0), "50000");
        assert_eq!(format_tick(200000.0), "2e5");
        assert_eq!(format_tick(0.0), "0");
        assert_eq!(format_log_tick(20000.0), "20000");
        assert_eq!(format_log_tick(30000.0), "");
        assert_eq!(format_log_tick(0.001), "0.001");
    }

    #[test]
    fn axis_range_of_nothing_is_unit() {
        assert_eq!(axis_range(std::iter::empty(), false), (0.0, 1.0));
    }

    #[test]
    fn figure_writes_png_and_svg() {
        let dir = tempfile::tempdir().unwrap();
        let figure = Figure {
            title: "test".into(),
            panels: vec![Panel {
                title: "loss".into(),
                x_label: "learning rate".into(),
                y_label: "loss".into(),
                x_log: true,
                series: vec![Series {
                    name: "loss".into(),
                    points: vec![(1e-5, 2.0), (1e-3, f64::NAN), (1e-1, 0.5)],
                    color: 0,
                    style: LineStyle::Solid,
                }],
                markers: vec![Marker {
                    x: 1e-3,
                    label: "suggestion".into(),
                    color: 3,
                }],
                ..Panel::default()
            }],
        };
        let [png, svg] = write_figure(&figure, dir.path(), "plot").unwrap();
        let bytes = std::fs::read(&png).unwrap();
        assert_eq!(&bytes[1..4], b"PNG");
        let text = std::fs::read_to_string(&svg).unwrap();
        assert!(text.contains("<svg"), "{text}");
        assert!(text.contains("suggestion"), "legend entry missing");
    }
}
