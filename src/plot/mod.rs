//! Hand-written SVG: the Pareto scatter, one effect plot per axis, a line
//! (training loss); several lines with a legend and parallel coordinates
//! in [`multi`]. Plain axes, ticks at 1/2/5 steps, labels; no plotting
//! crate.

mod multi;

pub use multi::{lines, parallel, ParallelAxis, Series};
use std::fmt::Write;

const W: f64 = 720.0;
const H: f64 = 480.0;
const LEFT: f64 = 90.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 50.0;
const BOTTOM: f64 = 70.0;

/// `1.06G`, `512k`, `0.99`: short numbers for ticks and tables.
pub fn si(x: f64) -> String {
    let a = x.abs();
    let (v, suffix) = if a >= 1e12 {
        (x / 1e12, "T")
    } else if a >= 1e9 {
        (x / 1e9, "G")
    } else if a >= 1e6 {
        (x / 1e6, "M")
    } else if a >= 1e4 {
        (x / 1e3, "k")
    } else {
        (x, "")
    };
    let s = if v == v.trunc() && v.abs() < 1e4 {
        format!("{v:.0}")
    } else if v.abs() >= 100.0 {
        format!("{v:.1}")
    } else if v.abs() >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    };
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{suffix}")
}

/// A tick label with as many decimals as the tick step needs, so that
/// neighbouring ticks never read the same (`308.95M`, `309M`, `309.05M`).
fn tick_label(x: f64, step: f64) -> String {
    let scale = [(1e12, "T"), (1e9, "G"), (1e6, "M"), (1e4, "k")]
        .iter()
        .find(|(f, _)| x.abs().max(step) >= *f)
        .copied()
        .unwrap_or((1.0, ""));
    let (f, suffix) = if scale.0 == 1e4 { (1e3, "k") } else { scale };
    let digits = if step > 0.0 {
        (-(step / f).log10()).ceil().clamp(0.0, 6.0) as usize
    } else {
        0
    };
    let s = format!("{:.*}", digits, x / f);
    let s = if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    };
    format!("{s}{suffix}")
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Ticks covering `[lo, hi]` at a 1/2/5 step, and the padded range.
fn ticks(lo: f64, hi: f64) -> (f64, f64, Vec<f64>) {
    let (lo, hi) = if hi - lo <= f64::EPSILON * hi.abs().max(1.0) {
        let pad = (lo.abs() * 0.1).max(1.0);
        (lo - pad, hi + pad)
    } else {
        (lo, hi)
    };
    let raw = (hi - lo) / 5.0;
    let mag = 10f64.powf(raw.log10().floor());
    let step = [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|s| *s >= raw)
        .unwrap_or(10.0 * mag);
    let start = (lo / step).floor() * step;
    let end = (hi / step).ceil() * step;
    let mut t = Vec::new();
    let mut x = start;
    while x <= end + step * 1e-9 && t.len() < 50 {
        t.push(x);
        x += step;
    }
    (start, end, t)
}

struct Frame {
    x0: f64,
    x1: f64,
    y0: f64,
    y1: f64,
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        LEFT + (x - self.x0) / (self.x1 - self.x0) * (W - LEFT - RIGHT)
    }
    fn py(&self, y: f64) -> f64 {
        H - BOTTOM - (y - self.y0) / (self.y1 - self.y0) * (H - TOP - BOTTOM)
    }
}

fn header(out: &mut String, title: &str, x_label: &str, y_label: &str) {
    header_sized(out, title, x_label, y_label, H);
}

/// The header of a plot `height` tall (the frame is always `H` tall; a
/// taller plot has room for a legend under it).
fn header_sized(out: &mut String, title: &str, x_label: &str, y_label: &str, height: f64) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{W}\" height=\"{height}\" viewBox=\"0 0 {W} {height}\" font-family=\"sans-serif\" font-size=\"12\">\n\
         <rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n\
         <text x=\"{}\" y=\"28\" text-anchor=\"middle\" font-size=\"15\">{}</text>\n\
         <text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n\
         <text transform=\"translate(20 {}) rotate(-90)\" text-anchor=\"middle\">{}</text>\n",
        W / 2.0,
        esc(title),
        LEFT + (W - LEFT - RIGHT) / 2.0,
        H - 20.0,
        esc(x_label),
        TOP + (H - TOP - BOTTOM) / 2.0,
        esc(y_label),
    );
}

/// Axes lines, y ticks with grid lines, and x ticks (numeric, or the given labels).
fn axes(out: &mut String, f: &Frame, yt: &[f64], xt: &[(f64, String)]) {
    let _ = writeln!(
        out,
        "<g stroke=\"black\"><line x1=\"{LEFT}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\"/><line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{b}\"/></g>",
        b = H - BOTTOM,
        r = W - RIGHT
    );
    let y_step = if yt.len() > 1 { yt[1] - yt[0] } else { 0.0 };
    for &y in yt {
        let py = f.py(y);
        let _ = writeln!(
            out,
            "<line x1=\"{LEFT}\" y1=\"{py:.1}\" x2=\"{}\" y2=\"{py:.1}\" stroke=\"#e5e5e5\"/><line x1=\"{}\" y1=\"{py:.1}\" x2=\"{LEFT}\" y2=\"{py:.1}\" stroke=\"black\"/><text x=\"{}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>",
            W - RIGHT,
            LEFT - 5.0,
            LEFT - 8.0,
            py + 4.0,
            esc(&tick_label(y, y_step))
        );
    }
    for (x, label) in xt {
        let px = f.px(*x);
        let _ = writeln!(
            out,
            "<line x1=\"{px:.1}\" y1=\"{b}\" x2=\"{px:.1}\" y2=\"{}\" stroke=\"black\"/><text x=\"{px:.1}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
            H - BOTTOM + 5.0,
            H - BOTTOM + 20.0,
            esc(label),
            b = H - BOTTOM
        );
    }
}

/// The first two objectives of every analyzed trial; the front in red, joined.
pub fn pareto(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64, bool)]) -> String {
    let mut out = String::new();
    let xy = points.iter().map(|p| (p.0, p.1));
    let Some(f) = xy_frame(
        &mut out,
        (title, x_label, y_label),
        xy,
        "no analyzed trials",
    ) else {
        return out;
    };
    for &(x, y, _) in points.iter().filter(|p| !p.2) {
        let _ = writeln!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"#9aa5b1\" fill-opacity=\"0.7\"/>",
            f.px(x),
            f.py(y)
        );
    }
    let mut front: Vec<(f64, f64)> = points.iter().filter(|p| p.2).map(|p| (p.0, p.1)).collect();
    front.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    let path: Vec<String> = front
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y)))
        .collect();
    let _ = writeln!(
        out,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#d62728\" stroke-width=\"1.5\"/>",
        path.join(" ")
    );
    for &(x, y) in &front {
        let _ = writeln!(
            out,
            "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4.5\" fill=\"#d62728\"/>",
            f.px(x),
            f.py(y)
        );
    }
    let _ = writeln!(
        out,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#d62728\">● Pareto front ({} of {})</text>\n</svg>",
        W - RIGHT,
        TOP - 6.0,
        front.len(),
        points.len()
    );
    out
}

/// Mean of an objective per value of one axis (values in axis order; `None`
/// where no trial with that value was analyzed).
pub fn effect(title: &str, axis: &str, y_label: &str, means: &[(String, Option<f64>)]) -> String {
    let mut out = String::new();
    header(&mut out, title, axis, y_label);
    let ys: Vec<f64> = means.iter().filter_map(|m| m.1).collect();
    if ys.is_empty() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">no analyzed trials</text>\n</svg>",
            W / 2.0,
            H / 2.0
        );
        return out;
    }
    let (ymin, ymax) = bounds(ys.iter().copied());
    let (y0, y1, yt) = ticks(ymin, ymax);
    let n = means.len() as f64;
    let f = Frame {
        x0: -0.5,
        x1: n - 0.5,
        y0,
        y1,
    };
    // Thin out x labels when there are many values.
    let every = (means.len() / 12).max(1);
    let xt: Vec<(f64, String)> = means
        .iter()
        .enumerate()
        .filter(|(i, _)| i % every == 0)
        .map(|(i, m)| (i as f64, m.0.clone()))
        .collect();
    axes(&mut out, &f, &yt, &xt);
    let path: Vec<String> = means
        .iter()
        .enumerate()
        .filter_map(|(i, m)| m.1.map(|y| format!("{:.1},{:.1}", f.px(i as f64), f.py(y))))
        .collect();
    let _ = writeln!(
        out,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\"/>",
        path.join(" ")
    );
    for (i, m) in means.iter().enumerate() {
        if let Some(y) = m.1 {
            let _ = writeln!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"4\" fill=\"#1f77b4\"><title>{}: {}</title></circle>",
                f.px(i as f64),
                f.py(y),
                esc(&m.0),
                esc(&si(y))
            );
        }
    }
    out.push_str("</svg>\n");
    out
}

fn bounds(it: impl Iterator<Item = f64>) -> (f64, f64) {
    it.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), x| {
        (lo.min(x), hi.max(x))
    })
}

/// The header, and numeric axes spanning the points `xy`; without points,
/// `empty` in the middle, the SVG closed, and `None`.
fn xy_frame(
    out: &mut String,
    (title, x_label, y_label): (&str, &str, &str),
    xy: impl Iterator<Item = (f64, f64)> + Clone,
    empty: &str,
) -> Option<Frame> {
    header(out, title, x_label, y_label);
    numeric_frame(out, xy, empty)
}

/// Numeric axes spanning the points `xy` under a header already written;
/// without points, `empty` in the middle, the SVG closed, and `None`.
fn numeric_frame(
    out: &mut String,
    xy: impl Iterator<Item = (f64, f64)> + Clone,
    empty: &str,
) -> Option<Frame> {
    if xy.clone().next().is_none() {
        let _ = writeln!(
            out,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>\n</svg>",
            W / 2.0,
            H / 2.0,
            esc(empty)
        );
        return None;
    }
    let (xmin, xmax) = bounds(xy.clone().map(|p| p.0));
    let (ymin, ymax) = bounds(xy.map(|p| p.1));
    let (x0, x1, xt) = ticks(xmin, xmax);
    let (y0, y1, yt) = ticks(ymin, ymax);
    let f = Frame { x0, x1, y0, y1 };
    let x_step = if xt.len() > 1 { xt[1] - xt[0] } else { 0.0 };
    let xt: Vec<(f64, String)> = xt.into_iter().map(|x| (x, tick_label(x, x_step))).collect();
    axes(out, &f, &yt, &xt);
    Some(f)
}

/// A line through `points` (a training loss curve).
pub fn line(title: &str, x_label: &str, y_label: &str, points: &[(f64, f64)]) -> String {
    let mut out = String::new();
    let xy = points.iter().copied();
    let Some(f) = xy_frame(&mut out, (title, x_label, y_label), xy, "no points") else {
        return out;
    };
    let path: Vec<String> = points
        .iter()
        .map(|&(x, y)| format!("{:.1},{:.1}", f.px(x), f.py(y)))
        .collect();
    let _ = writeln!(
        out,
        "<polyline points=\"{}\" fill=\"none\" stroke=\"#1f77b4\" stroke-width=\"1.5\"/>\n</svg>",
        path.join(" ")
    );
    out
}
