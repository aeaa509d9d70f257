//! The benchmark plot as a self-contained SVG: latency by percentile (left; x on the
//! "nines" scale 0 → 99.99 %, y logarithmic in ms) and completions per second over time
//! (right), one line per run and priority.
//!
//! Written by hand rather than with plotters: plotters' text layout needs a font backend
//! (`ttf` needs fontconfig, `ab_glyph` needs a font file), while an SVG viewer lays out
//! `<text>` itself, so a few lines of SVG need no fonts and no extra dependency.

use std::fmt::Write;

use super::report::BenchReport;

const W: f64 = 1100.0;
const H: f64 = 420.0;
const COLORS: [&str; 9] = [
    "#d62728", "#1f77b4", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#17becf",
];

struct Panel {
    x0: f64,
    y0: f64,
    w: f64,
    h: f64,
}

impl Panel {
    fn px(&self, fx: f64) -> f64 {
        self.x0 + fx.clamp(0.0, 1.0) * self.w
    }
    fn py(&self, fy: f64) -> f64 {
        self.y0 + self.h - fy.clamp(0.0, 1.0) * self.h
    }
}

/// Renders the report's runs.
pub fn render(report: &BenchReport) -> String {
    let mut s = String::new();
    let _ = write!(
        s,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">
<rect width="100%" height="100%" fill="white"/>
<text x="{}" y="18" text-anchor="middle" font-size="14">{} — model {}, storage {}</text>
"#,
        W / 2.0,
        esc(&report.label),
        esc(&report.model),
        esc(&report.storage)
    );
    let left = Panel {
        x0: 70.0,
        y0: 40.0,
        w: 420.0,
        h: 320.0,
    };
    let right = Panel {
        x0: 620.0,
        y0: 40.0,
        w: 420.0,
        h: 320.0,
    };

    let (lat_series, tput_series) = series(report);
    latency_panel(&mut s, &left, &lat_series);
    throughput_panel(&mut s, &right, &tput_series);
    legend(&mut s, &lat_series);
    s.push_str("</svg>\n");
    s
}

/// One line of a panel: its name, color and points.
type Series = (String, &'static str, Vec<(f64, f64)>);

/// The latency and throughput series, one per run and priority.
fn series(report: &BenchReport) -> (Vec<Series>, Vec<Series>) {
    let mut lat_series = Vec::new();
    let mut tput_series = Vec::new();
    for run in &report.runs {
        for p in &run.per_priority {
            let name = format!("{} {}", run.system, p.priority);
            let color = COLORS[lat_series.len() % COLORS.len()];
            lat_series.push((name.clone(), color, p.distribution.clone()));
            let prio: usize = p.priority.trim_start_matches('p').parse().unwrap_or(0);
            let pts: Vec<(f64, f64)> = run
                .timeline
                .iter()
                .enumerate()
                .map(|(i, bins)| (i as f64 + 0.5, bins[prio.min(2)] as f64))
                .collect();
            tput_series.push((name, color, pts));
        }
    }
    (lat_series, tput_series)
}

/// Left: latency by percentile.
fn latency_panel(s: &mut String, left: &Panel, lat_series: &[Series]) {
    let max_nines = 4.0;
    let all_ms: Vec<f64> = lat_series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|&(_, ms)| ms))
        .filter(|&v| v > 0.0)
        .collect();
    let lo = all_ms
        .iter()
        .cloned()
        .fold(f64::INFINITY, f64::min)
        .max(1e-3);
    let hi = all_ms.iter().cloned().fold(0.0, f64::max).max(lo * 10.0);
    let (llo, lhi) = (lo.log10().floor(), hi.log10().ceil());
    axes(s, left, "percentile", "latency (ms, log)");
    for (k, label) in ["0", "90", "99", "99.9", "99.99"].iter().enumerate() {
        let x = left.px(k as f64 / max_nines);
        let _ = writeln!(
            s,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" text-anchor="middle">{label}</text>"##,
            left.y0,
            left.y0 + left.h,
            left.y0 + left.h + 15.0
        );
    }
    let mut e = llo;
    while e <= lhi {
        let y = left.py((e - llo) / (lhi - llo).max(1e-9));
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{}</text>"##,
            left.x0,
            left.x0 + left.w,
            left.x0 - 4.0,
            y + 4.0,
            fmt_ms(10f64.powf(e))
        );
        e += 1.0;
    }
    for (_, color, pts) in lat_series {
        let path: Vec<String> = pts
            .iter()
            .filter(|&&(_, ms)| ms > 0.0)
            .map(|&(pct, ms)| {
                let nines = -(1.0 - pct / 100.0).max(1e-12).log10();
                format!(
                    "{:.1},{:.1}",
                    left.px(nines / max_nines),
                    left.py((ms.log10() - llo) / (lhi - llo).max(1e-9))
                )
            })
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
            path.join(" ")
        );
    }
}

/// Right: completions per second.
fn throughput_panel(s: &mut String, right: &Panel, tput_series: &[Series]) {
    let tmax = tput_series
        .iter()
        .map(|(_, _, p)| p.len())
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let ymax = tput_series
        .iter()
        .flat_map(|(_, _, p)| p.iter().map(|&(_, v)| v))
        .fold(1.0, f64::max)
        * 1.1;
    axes(s, right, "seconds since start", "completions per second");
    for k in 0..=4 {
        let f = k as f64 / 4.0;
        let (x, y) = (right.px(f), right.py(f));
        let _ = writeln!(
            s,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" text-anchor="end">{:.0}</text><text x="{x:.1}" y="{:.1}" text-anchor="middle">{:.0}</text>"##,
            right.x0,
            right.x0 + right.w,
            right.x0 - 4.0,
            y + 4.0,
            f * ymax,
            right.y0 + right.h + 15.0,
            f * tmax
        );
    }
    for (_, color, pts) in tput_series {
        let path: Vec<String> = pts
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", right.px(t / tmax), right.py(v / ymax)))
            .collect();
        let _ = writeln!(
            s,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1.8" points="{}"/>"#,
            path.join(" ")
        );
    }
}

/// The legend under the panels.
fn legend(s: &mut String, lat_series: &[Series]) {
    for (i, (name, color, _)) in lat_series.iter().enumerate() {
        let x = 70.0 + (i % 6) as f64 * 170.0;
        let y = H - 30.0 + (i / 6) as f64 * 14.0;
        let _ = writeln!(
            s,
            r#"<rect x="{x}" y="{}" width="12" height="4" fill="{color}"/><text x="{}" y="{y}">{}</text>"#,
            y - 5.0,
            x + 16.0,
            esc(name)
        );
    }
}

fn axes(s: &mut String, p: &Panel, xlabel: &str, ylabel: &str) {
    let _ = writeln!(
        s,
        r##"<rect x="{}" y="{}" width="{}" height="{}" fill="none" stroke="#333"/>
<text x="{}" y="{}" text-anchor="middle">{xlabel}</text>
<text x="{}" y="{}" text-anchor="middle" transform="rotate(-90 {} {})">{ylabel}</text>"##,
        p.x0,
        p.y0,
        p.w,
        p.h,
        p.x0 + p.w / 2.0,
        p.y0 + p.h + 32.0,
        p.x0 - 48.0,
        p.y0 + p.h / 2.0,
        p.x0 - 48.0,
        p.y0 + p.h / 2.0
    );
}

fn fmt_ms(v: f64) -> String {
    if v >= 1.0 {
        format!("{v:.0}")
    } else {
        format!("{v}")
    }
}

fn esc(t: &str) -> String {
    t.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
