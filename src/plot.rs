//! An SVG chart of a comparison: perplexity and mean KL divergence against bits per weight, one
//! labelled point per file. Plain SVG text, no dependencies.

use crate::compare::CompareResult;

const W: f64 = 420.0;
const H: f64 = 300.0;
const PAD_L: f64 = 70.0;
const PAD_R: f64 = 20.0;
const PAD_T: f64 = 40.0;
const PAD_B: f64 = 50.0;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// "Nice" axis range around [lo, hi].
fn range(lo: f64, hi: f64) -> (f64, f64) {
    if !(lo.is_finite() && hi.is_finite()) {
        return (0.0, 1.0);
    }
    if (hi - lo).abs() < 1e-12 {
        let d = lo.abs().max(1e-6) * 0.05;
        return (lo - d, hi + d);
    }
    let m = (hi - lo) * 0.12;
    (lo - m, hi + m)
}

struct Panel<'a> {
    x0: f64,
    title: &'a str,
    y_label: &'a str,
    log_y: bool,
}

fn panel(out: &mut String, p: &Panel, pts: &[(f64, f64, String)]) {
    let tr = |v: f64| if p.log_y { v.max(1e-12).log10() } else { v };
    let xs: Vec<f64> = pts.iter().map(|q| q.0).collect();
    let ys: Vec<f64> = pts.iter().map(|q| tr(q.1)).collect();
    let (xl, xh) = range(
        xs.iter().copied().fold(f64::INFINITY, f64::min),
        xs.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let (yl, yh) = range(
        ys.iter().copied().fold(f64::INFINITY, f64::min),
        ys.iter().copied().fold(f64::NEG_INFINITY, f64::max),
    );
    let px = |x: f64| p.x0 + PAD_L + (x - xl) / (xh - xl) * (W - PAD_L - PAD_R);
    let py = |y: f64| PAD_T + (1.0 - (y - yl) / (yh - yl)) * (H - PAD_T - PAD_B);
    out.push_str(&format!(
        "<text x='{:.1}' y='22' font-size='14' font-weight='bold'>{}</text>\n",
        p.x0 + PAD_L,
        esc(p.title)
    ));
    out.push_str(&format!(
        "<rect x='{:.1}' y='{PAD_T}' width='{:.1}' height='{:.1}' fill='none' stroke='#444'/>\n",
        p.x0 + PAD_L,
        W - PAD_L - PAD_R,
        H - PAD_T - PAD_B
    ));
    for i in 0..=4 {
        let fx = xl + (xh - xl) * i as f64 / 4.0;
        let fy = yl + (yh - yl) * i as f64 / 4.0;
        let ylab = if p.log_y {
            format!("{:.1e}", 10f64.powf(fy))
        } else {
            format!("{fy:.3}")
        };
        out.push_str(&format!(
            "<text x='{:.1}' y='{:.1}' font-size='10' text-anchor='middle'>{fx:.2}</text>\n",
            px(fx),
            H - PAD_B + 14.0
        ));
        out.push_str(&format!(
            "<text x='{:.1}' y='{:.1}' font-size='10' text-anchor='end'>{ylab}</text>\n",
            p.x0 + PAD_L - 4.0,
            py(fy) + 3.0
        ));
        out.push_str(&format!(
            "<line x1='{:.1}' x2='{:.1}' y1='{:.1}' y2='{:.1}' stroke='#ddd'/>\n",
            p.x0 + PAD_L,
            p.x0 + W - PAD_R,
            py(fy),
            py(fy)
        ));
    }
    out.push_str(&format!(
        "<text x='{:.1}' y='{:.1}' font-size='11' text-anchor='middle'>bits per weight</text>\n",
        p.x0 + PAD_L + (W - PAD_L - PAD_R) / 2.0,
        H - 12.0
    ));
    out.push_str(&format!(
        "<text x='{:.1}' y='{:.1}' font-size='11' text-anchor='middle' transform='rotate(-90 {:.1} {:.1})'>{}</text>\n",
        p.x0 + 14.0,
        H / 2.0,
        p.x0 + 14.0,
        H / 2.0,
        esc(p.y_label)
    ));
    for ((x, y), (_, _, label)) in xs.iter().zip(&ys).zip(pts) {
        out.push_str(&format!(
            "<circle cx='{:.1}' cy='{:.1}' r='4' fill='#1f77b4'/>\n<text x='{:.1}' y='{:.1}' font-size='11'>{}</text>\n",
            px(*x),
            py(*y),
            px(*x) + 6.0,
            py(*y) - 6.0,
            esc(label)
        ));
    }
}

/// The chart for `r`: perplexity (left) and mean KLD vs the base (right, log scale; the base
/// itself is left out there).
pub fn svg(r: &CompareResult) -> String {
    let ppl: Vec<(f64, f64, String)> = r
        .rows
        .iter()
        .map(|row| (row.bits_per_weight, row.ppl, row.ty.clone()))
        .collect();
    let kld: Vec<(f64, f64, String)> = r
        .rows
        .iter()
        .skip(1)
        .map(|row| (row.bits_per_weight, row.mean_kld, row.ty.clone()))
        .collect();
    let mut out = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{}' height='{}' font-family='sans-serif'>\n<rect width='100%' height='100%' fill='white'/>\n",
        2.0 * W,
        H
    );
    panel(
        &mut out,
        &Panel {
            x0: 0.0,
            title: "perplexity",
            y_label: "ppl",
            log_y: false,
        },
        &ppl,
    );
    if !kld.is_empty() {
        panel(
            &mut out,
            &Panel {
                x0: W,
                title: "mean KL divergence vs base",
                y_label: "KLD (log scale)",
                log_y: true,
            },
            &kld,
        );
    }
    out.push_str("</svg>\n");
    out
}
