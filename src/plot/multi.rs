//! Plots of many trials at once: lines with a legend under the frame (loss
//! curves, test-loop curves) and parallel coordinates.

use super::{esc, header_sized, numeric_frame, si, BOTTOM, H, LEFT, RIGHT, TOP, W};
use std::fmt::Write;

/// Ten colours that stay apart (matplotlib's tab10).
const PALETTE: [&str; 10] = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf",
];
/// Legend rows under the frame: one per series, in two columns.
const LEGEND_ROW: f64 = 18.0;

/// One line of [`lines`].
pub struct Series {
    pub label: String,
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (a trial stopped early).
    pub dashed: bool,
}

/// The colour and dash of series `i`: the palette, then dashes for the
/// next ten, then dots.
fn style(i: usize, dashed: bool) -> (String, &'static str) {
    let dash = match (dashed, i / PALETTE.len()) {
        (true, _) | (false, 1) => " stroke-dasharray=\"6 3\"",
        (false, 0) => "",
        _ => " stroke-dasharray=\"2 2\"",
    };
    (PALETTE[i % PALETTE.len()].to_string(), dash)
}

/// Several lines over numeric axes, each with a marker per point when it
/// has few, and a legend under the frame.
pub fn lines(title: &str, x_label: &str, y_label: &str, series: &[Series]) -> String {
    let rows = series.len().div_ceil(2) as f64;
    let height = H + rows * LEGEND_ROW + 10.0;
    let mut out = String::new();
    header_sized(&mut out, title, x_label, y_label, height);
    let all = series.iter().flat_map(|s| s.points.iter().copied());
    let Some(f) = numeric_frame(&mut out, all, "no trained trials") else {
        return out;
    };
    for (i, s) in series.iter().enumerate() {
        let (colour, dash) = style(i, s.dashed);
        let path: Vec<String> = s
            .points
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y)))
            .collect();
        let _ = writeln!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"1.5\"{dash}><title>{}</title></polyline>",
            path.join(" "),
            esc(&s.label)
        );
        if s.points.len() <= 12 {
            for &(x, y) in &s.points {
                let _ = writeln!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{colour}\"><title>{}: {} at {}</title></circle>",
                    f.px(x),
                    f.py(y),
                    esc(&s.label),
                    esc(&si(y)),
                    esc(&si(x))
                );
            }
        }
        // The legend: two columns under the x-axis label.
        let col = (i % 2) as f64;
        let row = (i / 2) as f64;
        let lx = LEFT + col * (W - LEFT - RIGHT) / 2.0;
        let ly = H + 4.0 + row * LEGEND_ROW;
        let _ = writeln!(
            out,
            "<line x1=\"{lx:.1}\" y1=\"{ly:.1}\" x2=\"{:.1}\" y2=\"{ly:.1}\" stroke=\"{colour}\" stroke-width=\"2\"{dash}/><text x=\"{:.1}\" y=\"{:.1}\">{}</text>",
            lx + 24.0,
            lx + 30.0,
            ly + 4.0,
            esc(&s.label)
        );
    }
    out.push_str("</svg>\n");
    out
}

/// One vertical axis of [`parallel`].
pub enum ParallelAxis {
    /// An axis of the sweep: its value labels, evenly spaced bottom to top.
    Values { name: String, labels: Vec<String> },
    /// A metric: its range, low at the bottom.
    Metric { name: String, lo: f64, hi: f64 },
}

impl ParallelAxis {
    fn name(&self) -> &str {
        match self {
            ParallelAxis::Values { name, .. } | ParallelAxis::Metric { name, .. } => name,
        }
    }

    /// Where `v` (a value index or a metric) sits, 0 (bottom) to 1 (top).
    fn at(&self, v: f64) -> f64 {
        match self {
            ParallelAxis::Values { labels, .. } if labels.len() <= 1 => 0.5,
            ParallelAxis::Values { labels, .. } => v / (labels.len() - 1) as f64,
            ParallelAxis::Metric { lo, hi, .. } if hi > lo => (v - lo) / (hi - lo),
            ParallelAxis::Metric { .. } => 0.5,
        }
    }
}

/// Parallel coordinates: one vertical axis per entry of `axes`, one
/// polyline per trial through its values (`NaN`: skipped), the highlighted
/// ones (the Pareto front) in red over the others in grey.
pub fn parallel(title: &str, axes: &[ParallelAxis], trials: &[(Vec<f64>, bool)]) -> String {
    let mut out = String::new();
    header_sized(&mut out, title, "", "", H);
    if axes.len() < 2 || trials.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">nothing to plot</text>\n</svg>",
            W / 2.0,
            H / 2.0
        );
        return out;
    }
    // Room for the last axis's value labels and for names centred on the end axes.
    let (left, right) = (LEFT - 10.0, W - RIGHT - 90.0);
    let px = |k: usize| left + k as f64 * (right - left) / (axes.len() - 1) as f64;
    let py = |t: f64| H - BOTTOM - t * (H - TOP - BOTTOM - 10.0);
    let mut order: Vec<&(Vec<f64>, bool)> = trials.iter().collect();
    // The highlighted lines last, so they are drawn on top.
    order.sort_by_key(|t| t.1);
    for (values, front) in order {
        let pts: Vec<String> = values
            .iter()
            .enumerate()
            .filter(|(_, v)| !v.is_nan())
            .map(|(k, &v)| format!("{:.1},{:.1}", px(k), py(axes[k].at(v))))
            .collect();
        let (colour, width, opacity) = if *front {
            ("#d62728", 2.0, 0.9)
        } else {
            ("#9aa5b1", 1.2, 0.6)
        };
        let _ = writeln!(
            out,
            "<polyline points=\"{}\" fill=\"none\" stroke=\"{colour}\" stroke-width=\"{width}\" stroke-opacity=\"{opacity}\"/>",
            pts.join(" ")
        );
    }
    for (k, axis) in axes.iter().enumerate() {
        let x = px(k);
        let _ = writeln!(
            out,
            "<line x1=\"{x:.1}\" y1=\"{:.1}\" x2=\"{x:.1}\" y2=\"{:.1}\" stroke=\"black\"/>",
            py(0.0),
            py(1.0)
        );
        // Names alternate between two rows so that long ones do not collide.
        let name_y = H - BOTTOM + 22.0 + (k % 2) as f64 * 16.0;
        let _ = writeln!(
            out,
            "<text x=\"{x:.1}\" y=\"{name_y:.1}\" text-anchor=\"middle\" font-weight=\"bold\">{}</text>",
            esc(axis.name())
        );
        let ticks: Vec<(f64, String)> = match axis {
            ParallelAxis::Values { labels, .. } => labels
                .iter()
                .enumerate()
                .map(|(i, l)| (axis.at(i as f64), l.clone()))
                .collect(),
            ParallelAxis::Metric { lo, hi, .. } => {
                let mid = (lo + hi) / 2.0;
                let mut t = vec![(0.0, si(*lo)), (1.0, si(*hi))];
                if hi > lo {
                    t.push((0.5, si(mid)));
                }
                t
            }
        };
        for (t, label) in ticks {
            let y = py(t);
            let _ = writeln!(
                out,
                "<line x1=\"{:.1}\" y1=\"{y:.1}\" x2=\"{x:.1}\" y2=\"{y:.1}\" stroke=\"black\"/><text x=\"{:.1}\" y=\"{:.1}\" font-size=\"11\" paint-order=\"stroke\" stroke=\"white\" stroke-width=\"3\">{}</text>",
                x - 4.0,
                x + 5.0,
                y + 4.0,
                esc(&label)
            );
        }
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#d62728\">— Pareto front</text>\n</svg>",
        W - RIGHT,
        TOP - 6.0
    );
    out
}
