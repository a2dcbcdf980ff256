//! The figures a benchmark reports: each is printed, and when `ALIEN_BENCH_REPORT` names a file
//! (`cargo xtask bench` sets it), appended to it as one JSON line, which xtask gathers into
//! `target/bench/report.json`, a Markdown table and `docs/performance.md`.
//!
//! A figure is the best of its rounds and its reference is the best of the reference's rounds in
//! the same run (rounds alternate, so neither side gets the warmer machine); its floor is the
//! bound issue 21 set, checked here.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // shared by several benchmarks

use std::io::Write;

use serde_json::json;

/// Which way a figure is better.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
}

/// The bound a figure must hold.
#[derive(Clone, Copy)]
pub enum Floor {
    /// The ratio figure / reference (higher is better) at least this.
    RatioAtLeast(f64),
    /// The ratio figure / reference (lower is better) at most this.
    RatioAtMost(f64),
    /// The value itself at least this.
    AtLeast(f64),
    /// The value itself below this.
    Below(f64),
    /// No bound: reported for context.
    None,
}

/// One measured figure with its reference.
pub struct Figure {
    pub bench: &'static str,
    pub name: String,
    pub unit: &'static str,
    pub better: Better,
    /// Every round's value, in order.
    pub rounds: Vec<f64>,
    pub reference: Option<Reference>,
    pub floor: Floor,
}

/// The reference measured in the same run.
pub struct Reference {
    pub name: String,
    pub rounds: Vec<f64>,
}

fn best(values: &[f64], better: Better) -> f64 {
    let pick = |a: f64, b: f64| if better == Better::Higher { a.max(b) } else { a.min(b) };
    values.iter().copied().reduce(pick).unwrap_or(f64::NAN)
}

impl Figure {
    pub fn new(bench: &'static str, name: impl Into<String>, unit: &'static str) -> Figure {
        Figure {
            bench,
            name: name.into(),
            unit,
            better: Better::Higher,
            rounds: Vec::new(),
            reference: None,
            floor: Floor::None,
        }
    }

    pub fn lower_is_better(mut self) -> Figure {
        self.better = Better::Lower;
        self
    }

    pub fn rounds(mut self, rounds: Vec<f64>) -> Figure {
        self.rounds = rounds;
        self
    }

    pub fn against(mut self, name: impl Into<String>, rounds: Vec<f64>) -> Figure {
        self.reference = Some(Reference { name: name.into(), rounds });
        self
    }

    pub fn floor(mut self, floor: Floor) -> Figure {
        self.floor = floor;
        self
    }

    pub fn value(&self) -> f64 {
        best(&self.rounds, self.better)
    }

    pub fn reference_value(&self) -> Option<f64> {
        self.reference.as_ref().map(|r| best(&r.rounds, self.better))
    }

    pub fn ratio(&self) -> Option<f64> {
        self.reference_value().map(|r| self.value() / r)
    }

    /// Whether the floor holds; `None` without a floor.
    pub fn holds(&self) -> Option<bool> {
        let value = self.value();
        match self.floor {
            Floor::RatioAtLeast(min) => self.ratio().map(|r| r >= min),
            Floor::RatioAtMost(max) => self.ratio().map(|r| r <= max),
            Floor::AtLeast(min) => Some(value >= min),
            Floor::Below(max) => Some(value < max),
            Floor::None => None,
        }
    }

    fn floor_text(&self) -> Option<String> {
        match self.floor {
            Floor::RatioAtLeast(min) => Some(format!(">= {min}x")),
            Floor::RatioAtMost(max) => Some(format!("<= {max}x")),
            Floor::AtLeast(min) => Some(format!(">= {min} {}", self.unit)),
            Floor::Below(max) => Some(format!("< {max} {}", self.unit)),
            Floor::None => None,
        }
    }

    /// Prints the figure and appends it to the report file, if any.
    pub fn report(self) {
        let rounds: Vec<String> = self.rounds.iter().map(|v| format!("{v:.2}")).collect();
        let mut line = format!(
            "[{}] {}: {:.2} {} (best of {}: {})",
            self.bench,
            self.name,
            self.value(),
            self.unit,
            self.rounds.len(),
            rounds.join(", ")
        );
        if let (Some(reference), Some(value), Some(ratio)) =
            (&self.reference, self.reference_value(), self.ratio())
        {
            line.push_str(&format!(
                "; {}: {value:.2} {}; ratio {ratio:.2}",
                reference.name, self.unit
            ));
        }
        if let (Some(floor), Some(holds)) = (self.floor_text(), self.holds()) {
            line.push_str(&format!("; floor {floor}: {}", if holds { "holds" } else { "MISSED" }));
        }
        println!("{line}");
        let Ok(path) = std::env::var("ALIEN_BENCH_REPORT") else { return };
        let record = json!({
            "bench": self.bench,
            "figure": self.name,
            "unit": self.unit,
            "value": self.value(),
            "rounds": self.rounds,
            "reference": self.reference.as_ref().map(|r| r.name.clone()),
            "referenceValue": self.reference_value(),
            "referenceRounds": self.reference.as_ref().map(|r| r.rounds.clone()),
            "ratio": self.ratio(),
            "floor": self.floor_text(),
            "holds": self.holds(),
        });
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("cannot open the report file {path}: {e}"));
        writeln!(file, "{record}").unwrap();
    }
}

/// Peak resident set size of process `pid` so far (VmHWM), in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    rss_field(pid, "VmHWM:")
}

/// Resident set size of process `pid` now (VmRSS), in MiB.
pub fn rss_mib(pid: u32) -> f64 {
    rss_field(pid, "VmRSS:")
}

fn rss_field(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    kib / 1024.0
}

/// Waits until `GET /ready` on 127.0.0.1:`port` answers 200 (a manager answers `/health` and
/// 503 elsewhere while it starts), at most 30 s.
pub fn wait_ready(port: u16) {
    use std::io::{Read, Write};
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let request = "GET /ready HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n";
            let mut head = [0u8; 12];
            if stream.write_all(request.as_bytes()).is_ok()
                && stream.read_exact(&mut head).is_ok()
                && head.starts_with(b"HTTP/1.1 200")
            {
                return;
            }
        }
        assert!(std::time::Instant::now() < deadline, "the manager on port {port} is not ready");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
}
