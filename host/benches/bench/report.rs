//! The result: rows grouped by section, printed as one Markdown table per
//! section (readable in a terminal, pasted as is into docs/benchmarks.md)
//! and written as JSON with the raw figures behind every cell.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    Failover,
    LeaderEndpoint,
    State,
    Overhead,
    Flink,
}

impl Section {
    fn title(self) -> &'static str {
        match self {
            Section::Failover => "Failover",
            Section::LeaderEndpoint => "Leader endpoint",
            Section::State => "State",
            Section::Overhead => "Overhead",
            Section::Flink => {
                "Flink end to end (same run, same job, a fresh 3-member ZooKeeper per setup)"
            }
        }
    }

    /// The last column means something different per section; its header says what.
    fn compare_header(self) -> &'static str {
        match self {
            Section::Failover => "Flink + ZooKeeper HA (measured separately)",
            Section::State => "native operation (same run)",
            Section::Flink => "Flink's own ZooKeeper HA, 60 s session (same run)",
            _ => "notes",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub section: Section,
    pub metric: String,
    pub backend: String,
    pub value: String,
    pub target: String,
    /// `None` where the design sets no target.
    pub met: Option<bool>,
    pub samples: String,
    pub compare: String,
    /// The numbers behind `value` (milliseconds, requests per second, MiB...),
    /// named with their unit, for anyone who wants to plot or diff runs.
    pub figures: BTreeMap<String, f64>,
    /// Every sample, in milliseconds, where there are few enough to list.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub samples_ms: Vec<f64>,
}

impl Row {
    pub fn new(section: Section, metric: impl Into<String>, backend: impl Into<String>) -> Self {
        Row {
            section,
            metric: metric.into(),
            backend: backend.into(),
            value: String::new(),
            target: String::new(),
            met: None,
            samples: String::new(),
            compare: String::new(),
            figures: BTreeMap::new(),
            samples_ms: Vec::new(),
        }
    }

    pub fn value(mut self, v: impl Into<String>) -> Self {
        self.value = v.into();
        self
    }

    pub fn target(mut self, target: impl Into<String>, met: bool) -> Self {
        self.target = target.into();
        self.met = Some(met);
        self
    }

    pub fn samples(mut self, s: impl ToString) -> Self {
        self.samples = s.to_string();
        self
    }

    pub fn compare(mut self, c: impl Into<String>) -> Self {
        self.compare = c.into();
        self
    }

    pub fn figure(mut self, name: &str, v: f64) -> Self {
        self.figures.insert(name.into(), v);
        self
    }

    /// min, median, p99 and max of a sample set, and every sample, in
    /// milliseconds.
    pub fn spread(mut self, s: &Samples) -> Self {
        self.samples_ms = s.all_ms();
        self.figure("min_ms", ms(s.min()))
            .figure("median_ms", ms(s.pct(0.5)))
            .figure("p99_ms", ms(s.pct(0.99)))
            .figure("max_ms", ms(s.max()))
    }
}

#[derive(Default, Serialize)]
pub struct Report {
    pub rows: Vec<Row>,
}

impl Report {
    pub fn add(&mut self, row: Row) {
        let verdict = match row.met {
            Some(true) => " [met]",
            Some(false) => " [NOT MET]",
            None => "",
        };
        eprintln!(
            "bench:   {} ({}): {}{verdict}",
            row.metric, row.backend, row.value
        );
        self.rows.push(row);
    }

    /// One Markdown table per section, in section order, rows in the order
    /// they were measured.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut sections: Vec<Section> = self.rows.iter().map(|r| r.section).collect();
        sections.sort();
        sections.dedup();
        for section in sections {
            let header = [
                "metric",
                "backend",
                "value",
                "target",
                "met",
                "n",
                section.compare_header(),
            ]
            .map(String::from);
            let rows: Vec<[String; 7]> = self
                .rows
                .iter()
                .filter(|r| r.section == section)
                .map(|r| {
                    let met = match r.met {
                        Some(true) => "yes",
                        Some(false) => "**no**",
                        None => "",
                    };
                    [
                        r.metric.clone(),
                        r.backend.clone(),
                        r.value.clone(),
                        r.target.clone(),
                        met.into(),
                        r.samples.clone(),
                        r.compare.clone(),
                    ]
                })
                .collect();
            let _ = writeln!(out, "\n### {}\n", section.title());
            out.push_str(&markdown_table(&header, &rows));
        }
        out
    }
}

/// Columns padded to one width so the table also reads well as plain text.
fn markdown_table(header: &[String; 7], rows: &[[String; 7]]) -> String {
    let mut widths = [3usize; 7];
    for row in std::iter::once(header).chain(rows) {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell_text(cell).chars().count());
        }
    }
    let line = |cells: &[String; 7]| {
        let mut l = String::from("|");
        for (cell, w) in cells.iter().map(|c| cell_text(c)).zip(widths) {
            let _ = write!(l, " {cell}{} |", " ".repeat(w - cell.chars().count()));
        }
        l.push('\n');
        l
    };
    let mut out = line(header);
    out.push('|');
    for w in widths {
        let _ = write!(out, "{}|", "-".repeat(w + 2));
    }
    out.push('\n');
    for row in rows {
        out.push_str(&line(row));
    }
    out
}

/// A cell's text kept to one table cell: no line breaks, pipes escaped.
fn cell_text(cell: &str) -> String {
    cell.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .replace('|', "\\|")
}

/// Durations, sorted once, with nearest-rank percentiles (with 20 samples the
/// p99 is the largest one: no interpolation that would invent a value).
pub struct Samples(Vec<Duration>);

impl Samples {
    pub fn new(mut v: Vec<Duration>) -> Self {
        assert!(!v.is_empty(), "no samples");
        v.sort();
        Samples(v)
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn min(&self) -> Duration {
        self.0[0]
    }

    pub fn max(&self) -> Duration {
        self.0[self.0.len() - 1]
    }

    pub fn pct(&self, p: f64) -> Duration {
        let rank = (p * self.0.len() as f64).ceil() as usize;
        self.0[rank.clamp(1, self.0.len()) - 1]
    }

    pub fn all_ms(&self) -> Vec<f64> {
        self.0.iter().map(|d| ms(*d)).collect()
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A duration in the unit that reads best at its size.
pub fn human(d: Duration) -> String {
    let s = d.as_secs_f64();
    if s >= 1.0 {
        format!("{s:.2} s")
    } else if s >= 0.01 {
        format!("{:.1} ms", s * 1e3)
    } else if s >= 0.001 {
        format!("{:.2} ms", s * 1e3)
    } else {
        format!("{:.1} µs", s * 1e6)
    }
}

pub fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

pub fn thousands(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
