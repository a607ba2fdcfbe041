//! The dissemination figure: rounds to full dissemination against cluster size (log scale)
//! beside the push-pull bound, and messages per node, as hand-written SVG text.
//!
//! Only formats numbers it is given; runs nothing and writes no file (the driver does).

use super::rounds::{karp_bound, RoundReport};
use std::fmt::Write;

/// Cluster sizes of the sweep: 10, 30, 100, ..., 100,000.
pub const SWEEP: [usize; 9] = [10, 30, 100, 300, 1_000, 3_000, 10_000, 30_000, 100_000];

const PANEL_W: f64 = 420.0;
const PANEL_H: f64 = 300.0;
const MARGIN_L: f64 = 56.0;
const MARGIN_T: f64 = 44.0;
const MARGIN_B: f64 = 56.0;
const GAP: f64 = 80.0;

/// One panel's axes: log10 n from 1 to 5 across, `0..y_max` up.
struct Panel {
    left: f64,
    y_max: f64,
}

impl Panel {
    fn x(&self, n: f64) -> f64 {
        self.left + (n.log10() - 1.0) / 4.0 * PANEL_W
    }

    fn y(&self, v: f64) -> f64 {
        MARGIN_T + PANEL_H - v / self.y_max * PANEL_H
    }

    fn frame(&self, svg: &mut String, title: &str, y_label: &str, y_step: f64) {
        let (l, t, b) = (self.left, MARGIN_T, MARGIN_T + PANEL_H);
        let _ = writeln!(
            svg,
            r##"<rect x="{l}" y="{t}" width="{PANEL_W}" height="{PANEL_H}" fill="none" stroke="#888"/>"##
        );
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="middle" font-weight="bold">{title}</text>"##,
            l + PANEL_W / 2.0,
            t - 16.0
        );
        for exp in 1..=5 {
            let x = self.x(10f64.powi(exp));
            let label = 10usize.pow(exp as u32);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{b}" stroke="#eee"/><text x="{x:.1}" y="{}" text-anchor="middle">{label}</text>"##,
                b + 18.0
            );
        }
        let mut v = 0.0;
        while v <= self.y_max + 1e-9 {
            let y = self.y(v);
            let _ = writeln!(
                svg,
                r##"<line x1="{l}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{v}</text>"##,
                l + PANEL_W,
                l - 6.0,
                y + 4.0
            );
            v += y_step;
        }
        let _ = writeln!(
            svg,
            r##"<text x="{}" y="{}" text-anchor="middle">nodes n (log scale)</text>"##,
            l + PANEL_W / 2.0,
            b + 40.0
        );
        let _ = writeln!(
            svg,
            r##"<text transform="translate({},{}) rotate(-90)" text-anchor="middle">{y_label}</text>"##,
            l - 38.0,
            t + PANEL_H / 2.0
        );
    }

    fn polyline(&self, svg: &mut String, points: &[(f64, f64)], style: &str) {
        let coords: Vec<String> = points
            .iter()
            .map(|&(n, v)| format!("{:.1},{:.1}", self.x(n), self.y(v)))
            .collect();
        let _ = writeln!(
            svg,
            r##"<polyline points="{}" fill="none" {style}/>"##,
            coords.join(" ")
        );
    }

    fn dots(&self, svg: &mut String, points: &[(f64, f64)], color: &str) {
        for &(n, v) in points {
            let _ = writeln!(
                svg,
                r##"<circle cx="{:.1}" cy="{:.1}" r="4" fill="{color}"/>"##,
                self.x(n),
                self.y(v)
            );
        }
    }

    fn legend(&self, svg: &mut String, row: usize, color: &str, dashed: bool, text: &str) {
        let x = self.left + 12.0;
        let y = MARGIN_T + 18.0 + 18.0 * row as f64;
        let dash = if dashed {
            r#" stroke-dasharray="6 4""#
        } else {
            ""
        };
        let _ = writeln!(
            svg,
            r##"<line x1="{x}" y1="{}" x2="{}" y2="{}" stroke="{color}" stroke-width="2"{dash}/><text x="{}" y="{y}">{text}</text>"##,
            y - 4.0,
            x + 24.0,
            y - 4.0,
            x + 30.0
        );
    }
}

/// The figure for `reports` (one per cluster size; runs that never finished are left out of
/// the rounds panel).
pub fn dissemination_svg(reports: &[RoundReport]) -> String {
    let width = MARGIN_L * 2.0 + PANEL_W * 2.0 + GAP;
    let height = MARGIN_T + PANEL_H + MARGIN_B;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(
        svg,
        r##"<rect width="{width}" height="{height}" fill="white"/>"##
    );
    let rounds = Panel {
        left: MARGIN_L,
        y_max: 16.0,
    };
    rounds.frame(
        &mut svg,
        "Rounds until every node holds the update",
        "rounds",
        2.0,
    );
    let theory: Vec<(f64, f64)> = (0..=40)
        .map(|i| {
            let n = 10f64.powf(1.0 + i as f64 / 10.0);
            (n, karp_bound(n.round() as usize))
        })
        .collect();
    rounds.polyline(
        &mut svg,
        &theory,
        r##"stroke="#999" stroke-width="2" stroke-dasharray="6 4""##,
    );
    let measured: Vec<(f64, f64)> = reports
        .iter()
        .filter_map(|r| r.rounds_to_full.map(|x| (r.nodes as f64, f64::from(x))))
        .collect();
    rounds.polyline(
        &mut svg,
        &measured,
        r##"stroke="#1f77b4" stroke-width="2""##,
    );
    rounds.dots(&mut svg, &measured, "#1f77b4");
    rounds.legend(
        &mut svg,
        0,
        "#999",
        true,
        "log3 n + ln ln n + 2 (Karp et al.)",
    );
    rounds.legend(
        &mut svg,
        1,
        "#1f77b4",
        false,
        "measured (push fanout 3 + pull)",
    );

    let messages = Panel {
        left: MARGIN_L * 2.0 + PANEL_W + GAP - MARGIN_L,
        y_max: 16.0,
    };
    messages.frame(&mut svg, "Messages sent per node", "messages per node", 2.0);
    let series = [
        (
            "#d62728",
            "carrying the update (pushes + pull answers)",
            reports
                .iter()
                .map(|r| (r.nodes as f64, r.msgs_per_node))
                .collect::<Vec<_>>(),
        ),
        (
            "#2ca02c",
            "pull requests (summaries, one per round)",
            reports
                .iter()
                .map(|r| (r.nodes as f64, r.pull_requests_per_node))
                .collect(),
        ),
    ];
    for (row, (color, label, points)) in series.iter().enumerate() {
        messages.polyline(
            &mut svg,
            points,
            &format!(r##"stroke="{color}" stroke-width="2""##),
        );
        messages.dots(&mut svg, points, color);
        messages.legend(&mut svg, row, color, false, label);
    }
    messages.polyline(
        &mut svg,
        &[(10.0, 8.0), (100_000.0, 8.0)],
        r##"stroke="#d62728" stroke-width="1" stroke-dasharray="2 3""##,
    );
    messages.legend(
        &mut svg,
        2,
        "#d62728",
        true,
        "goal: at most 8 carrying the update",
    );
    svg.push_str("</svg>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::rounds::RoundModel;

    #[test]
    fn the_figure_plots_every_measured_size() {
        let reports: Vec<RoundReport> = [10, 100, 1_000]
            .into_iter()
            .map(|nodes| {
                RoundModel {
                    nodes,
                    seed: 1,
                    fanout: 3,
                    loss: 0.0,
                }
                .run()
            })
            .collect();
        let svg = dissemination_svg(&reports);
        assert!(svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"));
        // Three dots per series: rounds, update messages, pull requests.
        assert_eq!(svg.matches("<circle").count(), 9);
        assert!(svg.contains("Karp"));
    }
}
