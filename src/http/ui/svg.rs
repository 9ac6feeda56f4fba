//! Pictures the console draws on the server as SVG: a kind's latency histogram and a
//! workflow's graph. Text in them is escaped like any other value.

use std::collections::HashMap;
use std::time::Duration;

use maud::{Markup, html};

use crate::workflow::WorkflowStep;

/// Upper bounds of the histogram's buckets (the last one is open).
const BOUNDS_MS: [f64; 15] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0,
    10_000.0,
];

fn bound_label(ms: f64) -> String {
    if ms < 1.0 {
        format!("{}µs", (ms * 1_000.0).round())
    } else if ms < 1_000.0 {
        format!("{ms}ms")
    } else {
        format!("{}s", ms / 1_000.0)
    }
}

/// Counts of `durations` per bucket of [`BOUNDS_MS`] (plus one open bucket).
pub(crate) fn buckets(durations: &[Duration]) -> [u64; BOUNDS_MS.len() + 1] {
    let mut counts = [0_u64; BOUNDS_MS.len() + 1];
    for d in durations {
        let ms = d.as_secs_f64() * 1_000.0;
        let i = BOUNDS_MS
            .iter()
            .position(|b| ms <= *b)
            .unwrap_or(BOUNDS_MS.len());
        counts[i] = counts[i].saturating_add(1);
    }
    counts
}

/// A latency histogram of `durations` (bars per bucket, log-spaced bounds).
pub(crate) fn histogram(durations: &[Duration]) -> Markup {
    let counts = buckets(durations);
    let max = counts.iter().copied().max().unwrap_or(0).max(1);
    let (w, h, pad) = (640.0_f64, 180.0_f64, 24.0_f64);
    #[allow(clippy::cast_precision_loss)]
    let slot = (w - pad) / counts.len() as f64;
    html! {
        svg #histogram viewBox={ "0 0 " (w) " " (h + 2.0 * pad) } role="img"
            aria-label="latency histogram" preserveAspectRatio="xMidYMid meet" {
            @for (i, n) in counts.iter().enumerate() {
                @let x = pad + slot * i as f64;
                @let bar = h * (*n as f64) / (max as f64);
                rect.bar x=(format!("{x:.1}")) y=(format!("{:.1}", pad + h - bar))
                    width=(format!("{:.1}", slot * 0.85)) height=(format!("{bar:.1}")) {
                    title { (n) " executions " (bucket_label(i)) }
                }
                @if *n > 0 {
                    text.count x=(format!("{:.1}", x + slot * 0.42)) y=(format!("{:.1}", pad + h - bar - 4.0))
                        text-anchor="middle" { (n) }
                }
                text.axis x=(format!("{:.1}", x + slot * 0.42)) y=(format!("{:.1}", pad + h + 16.0))
                    text-anchor="middle" { (short_label(i)) }
            }
        }
    }
}

fn bucket_label(i: usize) -> String {
    match (
        i.checked_sub(1).and_then(|p| BOUNDS_MS.get(p)),
        BOUNDS_MS.get(i),
    ) {
        (None, Some(hi)) => format!("up to {}", bound_label(*hi)),
        (Some(lo), Some(hi)) => format!("{}–{}", bound_label(*lo), bound_label(*hi)),
        (Some(lo), None) => format!("over {}", bound_label(*lo)),
        (None, None) => String::new(),
    }
}

fn short_label(i: usize) -> String {
    BOUNDS_MS
        .get(i)
        .map_or_else(|| "more".to_owned(), |b| format!("≤{}", bound_label(*b)))
}

/// Most steps drawn; a larger workflow is shown as a table only.
pub(crate) const MAX_DRAWN_STEPS: usize = 400;

/// Each step's depth: 0 for a step that waits for nothing, else one more than its deepest
/// dependency. Steps on a cycle (which a stored workflow cannot have) stay at 0.
pub(crate) fn depths(steps: &[WorkflowStep]) -> Vec<usize> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    let mut depth = vec![0_usize; steps.len()];
    // Relax edges until nothing moves (at most one pass per layer).
    for _ in 0..steps.len() {
        let mut moved = false;
        for (i, step) in steps.iter().enumerate() {
            let want = step
                .after
                .iter()
                .filter_map(|d| index.get(d.as_str()))
                .map(|&d| depth[d].saturating_add(1))
                .max()
                .unwrap_or(0);
            if want > depth[i] && want <= steps.len() {
                depth[i] = want;
                moved = true;
            }
        }
        if !moved {
            break;
        }
    }
    depth
}

/// A workflow drawn as layers left to right, each step a box coloured by its state, an
/// arrow from each dependency to the step that waits for it. `link` gives each step's page.
pub(crate) fn workflow_graph(
    steps: &[WorkflowStep],
    link: impl Fn(&WorkflowStep) -> String,
) -> Markup {
    let depth = depths(steps);
    let layers = depth.iter().copied().max().map_or(0, |d| d + 1);
    let mut rows = vec![0_usize; layers];
    let mut pos = Vec::with_capacity(steps.len());
    for d in &depth {
        pos.push((*d, rows[*d]));
        rows[*d] += 1;
    }
    let (box_w, box_h, gap_x, gap_y, pad) = (150.0_f64, 40.0_f64, 60.0_f64, 14.0_f64, 10.0_f64);
    let tallest = rows.iter().copied().max().unwrap_or(1);
    #[allow(clippy::cast_precision_loss)]
    let (w, h) = (
        pad * 2.0 + layers as f64 * (box_w + gap_x) - gap_x,
        pad * 2.0 + tallest as f64 * (box_h + gap_y) - gap_y,
    );
    #[allow(clippy::cast_precision_loss)]
    let at = |i: usize| -> (f64, f64) {
        let (d, r) = pos[i];
        (
            pad + d as f64 * (box_w + gap_x),
            pad + r as f64 * (box_h + gap_y),
        )
    };
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.name.as_str(), i))
        .collect();
    html! {
        svg #graph viewBox={ "0 0 " (format!("{w:.0}")) " " (format!("{h:.0}")) } role="img"
            aria-label="workflow graph" width=(format!("{w:.0}")) {
            defs {
                marker #arrow viewBox="0 0 10 10" refX="10" refY="5" markerWidth="6" markerHeight="6"
                    orient="auto-start-reverse" { path d="M 0 0 L 10 5 L 0 10 z" {} }
            }
            @for (i, step) in steps.iter().enumerate() {
                @for dep in &step.after {
                    @if let Some(&j) = index.get(dep.as_str()) {
                        @let (x1, y1) = at(j);
                        @let (x2, y2) = at(i);
                        path.edge marker-end="url(#arrow)" d=(format!(
                            "M {:.1} {:.1} C {:.1} {:.1}, {:.1} {:.1}, {:.1} {:.1}",
                            x1 + box_w, y1 + box_h / 2.0,
                            x1 + box_w + gap_x / 2.0, y1 + box_h / 2.0,
                            x2 - gap_x / 2.0, y2 + box_h / 2.0,
                            x2, y2 + box_h / 2.0)) {}
                    }
                }
            }
            @for (i, step) in steps.iter().enumerate() {
                @let (x, y) = at(i);
                a href=(link(step)) {
                    g class={ "node state-" (step.state.as_str()) } data-step=(step.name)
                        data-state=(step.state.as_str()) {
                        rect x=(format!("{x:.1}")) y=(format!("{y:.1}")) width=(box_w) height=(box_h) rx="6" {}
                        text x=(format!("{:.1}", x + 8.0)) y=(format!("{:.1}", y + 17.0)) { (clip(&step.name, 20)) }
                        text.small x=(format!("{:.1}", x + 8.0)) y=(format!("{:.1}", y + 32.0)) {
                            (step.state.as_str()) " · " (clip(&step.kind, 12))
                        }
                        title { (step.name) " (" (step.kind) "): " (step.state.as_str()) }
                    }
                }
            }
        }
    }
}

fn clip(s: &str, chars: usize) -> String {
    if s.chars().count() <= chars {
        s.to_owned()
    } else {
        let mut out: String = s.chars().take(chars.saturating_sub(1)).collect();
        out.push('…');
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_fall_in_their_buckets() {
        let c = buckets(&[
            Duration::from_micros(50),
            Duration::from_millis(3),
            Duration::from_millis(3),
            Duration::from_secs(60),
        ]);
        assert_eq!(c[0], 1);
        assert_eq!(c[5], 2, "3 ms is in (2.5, 5]");
        assert_eq!(c[BOUNDS_MS.len()], 1, "a minute is in the open bucket");
        assert_eq!(c.iter().sum::<u64>(), 4);
    }

    #[test]
    fn clipping_counts_characters() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééééééé", 4), "ééé…");
    }
}
