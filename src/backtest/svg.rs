//! Inline SVG charts for the report page: no scripts and no fonts (text uses the reader's
//! generic sans-serif), so the page opens offline and prints.

use std::fmt::Write;

/// Chart size in SVG units.
const W: f64 = 420.0;
const H: f64 = 260.0;
/// Plot margins: left, right, top, bottom.
const M: (f64, f64, f64, f64) = (48.0, 12.0, 28.0, 36.0);

/// One line of a chart.
pub struct Series<'a> {
    /// Legend name.
    pub name: &'a str,
    /// Stroke colour.
    pub color: &'a str,
    /// Points in data units (NaN points break the line).
    pub points: Vec<(f64, f64)>,
    /// Dashed stroke.
    pub dashed: bool,
}

/// Escapes text for HTML and SVG.
pub fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

/// A line chart over `x` × `y` ranges, with axes, ticks, a legend and optionally the diagonal.
pub fn line_chart(
    title: &str,
    (x_label, y_label): (&str, &str),
    series: &[Series<'_>],
    (x0, x1): (f64, f64),
    (y0, y1): (f64, f64),
    diagonal: bool,
) -> String {
    let (pw, ph) = (W - M.0 - M.1, H - M.2 - M.3);
    let sx = |x: f64| M.0 + (x - x0) / (x1 - x0).max(1e-12) * pw;
    let sy = |y: f64| M.2 + ph - (y - y0) / (y1 - y0).max(1e-12) * ph;
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg class="chart" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" aria-label="{t}" xmlns="http://www.w3.org/2000/svg"><text x="{cx}" y="16" text-anchor="middle" class="title">{t}</text>"#,
        t = esc(title),
        cx = W / 2.0
    );
    let _ = write!(s, r##"<rect x="{}" y="{}" width="{pw}" height="{ph}" fill="#fff" stroke="#999"/>"##, M.0, M.2);
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let (x, y) = (x0 + f * (x1 - x0), y0 + f * (y1 - y0));
        let _ = write!(
            s,
            r##"<line x1="{a}" y1="{b}" x2="{a}" y2="{c}" stroke="#eee"/><text x="{a}" y="{d}" text-anchor="middle" class="tick">{xl}</text><line x1="{e}" y1="{g}" x2="{h}" y2="{g}" stroke="#eee"/><text x="{i}" y="{j}" text-anchor="end" class="tick">{yl}</text>"##,
            a = sx(x),
            b = M.2,
            c = M.2 + ph,
            d = M.2 + ph + 12.0,
            xl = tick(x),
            e = M.0,
            g = sy(y),
            h = M.0 + pw,
            i = M.0 - 4.0,
            j = sy(y) + 3.0,
            yl = tick(y)
        );
    }
    let _ = write!(
        s,
        r#"<text x="{}" y="{}" text-anchor="middle" class="axis">{}</text><text x="12" y="{}" text-anchor="middle" class="axis" transform="rotate(-90 12 {})">{}</text>"#,
        M.0 + pw / 2.0,
        H - 6.0,
        esc(x_label),
        M.2 + ph / 2.0,
        M.2 + ph / 2.0,
        esc(y_label)
    );
    if diagonal {
        let _ = write!(
            s,
            r##"<line x1="{}" y1="{}" x2="{}" y2="{}" stroke="#bbb" stroke-dasharray="3 3"/>"##,
            sx(x0),
            sy(y0),
            sx(x1),
            sy(y1)
        );
    }
    for (n, se) in series.iter().enumerate() {
        let mut d = String::new();
        let mut pen = false;
        for &(x, y) in &se.points {
            if !x.is_finite() || !y.is_finite() {
                pen = false;
                continue;
            }
            let _ = write!(d, "{}{:.1} {:.1} ", if pen { "L" } else { "M" }, sx(x), sy(y.clamp(y0, y1)));
            pen = true;
        }
        let dash = if se.dashed { r#" stroke-dasharray="5 3""# } else { "" };
        let _ = write!(s, r#"<path d="{d}" fill="none" stroke="{}" stroke-width="1.6"{dash}/>"#, se.color);
        let ly = M.2 + 12.0 + n as f64 * 13.0;
        let lx = M.0 + pw - 110.0;
        let _ = write!(
            s,
            r#"<line x1="{lx}" y1="{ly}" x2="{}" y2="{ly}" stroke="{}" stroke-width="2"{dash}/><text x="{}" y="{}" class="legend">{}</text>"#,
            lx + 16.0,
            se.color,
            lx + 20.0,
            ly + 3.5,
            esc(se.name)
        );
    }
    s.push_str("</svg>");
    s
}

/// Overlaid histograms (as steps) of bin counts over [0, 1]; `log` plots log10(1 + count).
pub fn histogram(title: &str, series: &[(&str, &str, &[u64])], log: bool) -> String {
    let f = |n: u64| if log { (1.0 + n as f64).log10() } else { n as f64 };
    let top = series.iter().flat_map(|s| s.2.iter().map(|&n| f(n))).fold(0.0, f64::max).max(1.0);
    let lines: Vec<Series<'_>> = series
        .iter()
        .enumerate()
        .map(|(i, &(name, color, bins))| {
            let w = 1.0 / bins.len().max(1) as f64;
            let mut points = Vec::with_capacity(bins.len() * 2);
            for (b, &n) in bins.iter().enumerate() {
                points.push((b as f64 * w, f(n)));
                points.push(((b + 1) as f64 * w, f(n)));
            }
            Series { name, color, points, dashed: i > 0 }
        })
        .collect();
    let y = if log { "log10(1 + events)" } else { "events" };
    line_chart(title, ("score", y), &lines, (0.0, 1.0), (0.0, top), false)
}

/// A tick label: short, without trailing zeros.
fn tick(v: f64) -> String {
    if v.abs() >= 1000.0 {
        format!("{v:.0}")
    } else {
        let s = format!("{v:.2}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}
