//! The results table: printed, and written as Markdown to `target/chaos-report.md`.

use std::fmt::Write as _;
use std::path::Path;

use crate::verify::Tally;

/// One scenario on one store.
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub(crate) scenario: String,
    pub(crate) store: String,
    pub(crate) tally: Tally,
    pub(crate) secs: f64,
}

impl Row {
    pub(crate) fn passed(&self) -> bool {
        self.tally.failures.is_empty()
    }

    fn cells(&self) -> Vec<String> {
        let t = &self.tally;
        let lag = t
            .p99_lag
            .map_or_else(|| "-".to_owned(), |p| format!("{p:.1}s"));
        vec![
            self.scenario.clone(),
            self.store.clone(),
            t.jobs.to_string(),
            t.succeeded.to_string(),
            t.dead.to_string(),
            t.cancelled.to_string(),
            t.lost.to_string(),
            t.stuck.to_string(),
            t.double_finished.to_string(),
            t.duplicates.to_string(),
            t.takeovers.to_string(),
            t.parked.to_string(),
            lag,
            format!("{:.0}s", self.secs),
            if self.passed() { "PASS" } else { "FAIL" }.to_owned(),
        ]
    }
}

const HEADERS: [&str; 15] = [
    "scenario",
    "store",
    "jobs",
    "succeeded",
    "dead",
    "cancelled",
    "lost",
    "stuck",
    "double-finished",
    "duplicate executions",
    "takeovers",
    "parked",
    "p99 lag",
    "time",
    "verdict",
];

/// The table as fixed-width text, then each failing row's reasons.
pub(crate) fn text(rows: &[Row]) -> String {
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    let cells: Vec<Vec<String>> = rows.iter().map(Row::cells).collect();
    for row in &cells {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let line = |cells: Vec<String>| {
        cells
            .iter()
            .zip(&widths)
            .enumerate()
            .map(|(i, (c, w))| {
                if i < 2 {
                    format!("{c:<w$}")
                } else {
                    format!("{c:>w$}")
                }
            })
            .collect::<Vec<_>>()
            .join("  ")
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}", line(HEADERS.map(str::to_owned).to_vec()));
    for row in cells {
        let _ = writeln!(out, "{}", line(row));
    }
    for row in rows {
        for failure in &row.tally.failures {
            let _ = writeln!(out, "FAIL {}/{}: {failure}", row.scenario, row.store);
        }
    }
    out
}

/// The report as Markdown: a heading with how it ran, the table, then failures and notes.
pub(crate) fn markdown(rows: &[Row], preamble: &[String]) -> String {
    let mut out = String::from("# Chaos suite report\n\n");
    for line in preamble {
        let _ = writeln!(out, "- {line}");
    }
    out.push('\n');
    let _ = writeln!(out, "| {} |", HEADERS.join(" | "));
    let _ = writeln!(
        out,
        "|{}",
        HEADERS
            .iter()
            .enumerate()
            .map(|(i, _)| if i < 2 { "---|" } else { "---:|" })
            .collect::<String>()
    );
    for row in rows {
        let _ = writeln!(out, "| {} |", row.cells().join(" | "));
    }
    let failed: Vec<&Row> = rows.iter().filter(|r| !r.passed()).collect();
    if !failed.is_empty() {
        out.push_str("\n## Failures\n\n");
        for row in failed {
            for failure in &row.tally.failures {
                let _ = writeln!(out, "- **{}/{}**: {failure}", row.scenario, row.store);
            }
        }
    }
    let noted: Vec<&Row> = rows.iter().filter(|r| !r.tally.notes.is_empty()).collect();
    if !noted.is_empty() {
        out.push_str("\n## Notes\n\n");
        for row in noted {
            for note in &row.tally.notes {
                let note = note.replace('\n', "\n  ");
                let _ = writeln!(out, "- {}/{}: {note}", row.scenario, row.store);
            }
        }
    }
    out
}

pub(crate) fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))
}
