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

fn panel(out: &mut String, p: &Panel, all: &[(f64, f64, String)]) {
    // On a log axis, zero values (an exact file) cannot be placed: name them instead.
    let (pts, zeros): (Vec<_>, Vec<_>) = all.iter().cloned().partition(|q| !p.log_y || q.1 > 0.0);
    if !zeros.is_empty() {
        let names: Vec<&str> = zeros.iter().map(|q| q.2.as_str()).collect();
        out.push_str(&format!(
            "<text x='{:.1}' y='{:.1}' font-size='11' fill='#444'>exactly 0 (identical to the base): {}</text>\n",
            p.x0 + PAD_L,
            PAD_T - 6.0,
            esc(&names.join(", "))
        ));
    }
    if pts.is_empty() {
        return;
    }
    let pts = &pts[..];
    let tr = |v: f64| if p.log_y { v.log10() } else { v };
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
    // Labels: nudge each one down until it clears the labels already placed.
    let mut placed: Vec<(f64, f64)> = Vec::new();
    for ((x, y), (_, _, label)) in xs.iter().zip(&ys).zip(pts) {
        let (cx, cy) = (px(*x), py(*y));
        let (lx, mut ly) = (cx + 6.0, cy - 6.0);
        let width = 7.0 * label.len() as f64;
        while placed
            .iter()
            .any(|&(ox, oy)| (ox - lx).abs() < width && (oy - ly).abs() < 11.0)
        {
            ly += 12.0;
        }
        placed.push((lx, ly));
        out.push_str(&format!(
            "<circle cx='{cx:.1}' cy='{cy:.1}' r='4' fill='#1f77b4'/>\n<text x='{lx:.1}' y='{ly:.1}' font-size='11'>{}</text>\n",
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compare::{CompareResult, CompareRow};

    fn row(ty: &str, bpw: f64, ppl: f64, kld: f64) -> CompareRow {
        CompareRow {
            file: format!("m-{ty}.gguf"),
            ty: ty.into(),
            bytes: 1,
            bits_per_weight: bpw,
            ppl,
            ppl_stderr: 0.1,
            delta_ppl: 0.0,
            ppl_ratio: 1.0,
            mean_kld: kld,
            kld_p99: kld,
            top1_agreement: 1.0,
            rms_delta_p: 0.0,
        }
    }

    #[test]
    fn chart_places_every_file_and_names_exact_ones() {
        let r = CompareResult {
            n_ctx: 256,
            chunks: 1,
            tokens_scored: 128,
            rows: vec![
                row("f32", 32.0, 34.26, 0.0),
                row("q8_0", 10.2, 34.26, 0.0),
                row("q4_k", 4.6, 34.7, 8e-3),
                row("q4_0", 4.6, 34.8, 1e-2),
            ],
        };
        let s = svg(&r);
        assert!(s.starts_with("<svg") && s.trim_end().ends_with("</svg>"));
        // 4 points on the ppl panel, 2 on the KLD panel (q8_0's 0 is named, not plotted).
        assert_eq!(s.matches("<circle").count(), 6);
        assert!(s.contains("identical to the base): q8_0"));
        assert!(!s.contains("NaN") && !s.contains("inf"));
    }
}
