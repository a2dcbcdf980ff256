//! How answers are shown: the manager's JSON (`--json`), aligned tables, colour on a terminal
//! only (and never with `NO_COLOR`), times relative to now.

use std::io::{IsTerminal, Write};

use alien_core::DeploymentStatus;
use chrono::{DateTime, Utc};
use serde::Serialize;

/// Where and how to print.
#[derive(Debug, Clone, Copy)]
pub struct Output {
    /// `--json`: print the manager's JSON on stdout.
    pub json: bool,
    /// Colour on stdout.
    pub colour: bool,
    /// stderr is a terminal (progress bars).
    pub interactive: bool,
}

impl Output {
    /// From `--json` and the terminal.
    pub fn new(json: bool) -> Output {
        let no_colour = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        Output {
            json,
            colour: !no_colour && std::io::stdout().is_terminal(),
            interactive: std::io::stderr().is_terminal(),
        }
    }

    /// Pretty JSON of `value` on stdout.
    pub fn print_json<T: Serialize>(&self, value: &T) -> Result<(), crate::Failure> {
        let text = serde_json::to_string_pretty(value)
            .map_err(|e| crate::Failure::Local(format!("cannot encode the answer: {e}")))?;
        println!("{text}");
        Ok(())
    }

    /// `text` in bold, when colouring.
    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// `text` dimmed, when colouring.
    pub fn dim(&self, text: &str) -> String {
        self.paint("2", text)
    }

    /// A status, coloured by how it is going.
    pub fn status(&self, status: DeploymentStatus) -> String {
        let code = if status == DeploymentStatus::Running {
            "32"
        } else if status.is_failed() {
            "31"
        } else {
            "33"
        };
        self.paint(code, &status.to_string())
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.colour { format!("\x1b[{code}m{text}\x1b[0m") } else { text.to_owned() }
    }

    /// `key: value` lines with the keys aligned.
    pub fn fields(&self, rows: &[(&str, String)]) {
        let width = rows.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        let mut out = std::io::stdout().lock();
        for (key, value) in rows {
            let _ = writeln!(out, "{:<width$}  {value}", format!("{key}:"), width = width + 1);
        }
    }
}

/// Visible width of `text` (colour codes do not count).
fn width(text: &str) -> usize {
    let mut visible = 0;
    let mut escape = false;
    for c in text.chars() {
        match (escape, c) {
            (false, '\x1b') => escape = true,
            (true, 'm') => escape = false,
            (true, _) => {}
            (false, _) => visible += 1,
        }
    }
    visible
}

/// Rows under headers, columns aligned with two spaces between them.
#[derive(Debug, Default)]
pub struct Table {
    headers: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// An empty table with `headers`.
    pub fn new(headers: &[&'static str]) -> Table {
        Table { headers: headers.to_vec(), rows: Vec::new() }
    }

    /// Adds a row (as many cells as headers).
    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    /// The table as text, headers in bold when colouring; `empty` when there are no rows.
    pub fn render(&self, output: &Output, empty: &str) -> String {
        if self.rows.is_empty() {
            return format!("{empty}\n");
        }
        let mut widths: Vec<usize> = self.headers.iter().map(|h| h.len()).collect();
        for row in &self.rows {
            for (i, cell) in row.iter().enumerate() {
                if let Some(w) = widths.get_mut(i) {
                    *w = (*w).max(width(cell));
                }
            }
        }
        let line = |cells: Vec<String>| {
            let last = cells.len().saturating_sub(1);
            let mut text = String::new();
            for (i, cell) in cells.into_iter().enumerate() {
                text.push_str(&cell);
                if i < last {
                    let pad = widths.get(i).copied().unwrap_or(0).saturating_sub(width(&cell));
                    text.push_str(&" ".repeat(pad + 2));
                }
            }
            text.push('\n');
            text
        };
        let mut text = line(self.headers.iter().map(|h| output.bold(h)).collect());
        for row in &self.rows {
            text.push_str(&line(row.clone()));
        }
        text
    }

    /// Prints [`Table::render`].
    pub fn print(&self, output: &Output, empty: &str) {
        print!("{}", self.render(output, empty));
    }
}

/// `3 minutes ago`, `in 2 hours`, `just now`.
pub fn relative(at: DateTime<Utc>) -> String {
    relative_to(at, Utc::now())
}

fn relative_to(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let seconds = (now - at).num_seconds();
    let (amount, future) = (seconds.unsigned_abs(), seconds < 0);
    if amount < 10 {
        return "just now".to_owned();
    }
    let (n, unit) = match amount {
        0..60 => (amount, "second"),
        60..3600 => (amount / 60, "minute"),
        3600..86_400 => (amount / 3600, "hour"),
        86_400..2_592_000 => (amount / 86_400, "day"),
        2_592_000..31_536_000 => (amount / 2_592_000, "month"),
        _ => (amount / 31_536_000, "year"),
    };
    let plural = if n == 1 { "" } else { "s" };
    if future { format!("in {n} {unit}{plural}") } else { format!("{n} {unit}{plural} ago") }
}

/// An optional value, or a dash.
pub fn or_dash<T: std::fmt::Display>(value: Option<T>) -> String {
    value.map_or_else(|| "-".to_owned(), |v| v.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_relative_to_now() {
        let now = Utc::now();
        let ago = |s: i64| relative_to(now - chrono::Duration::seconds(s), now);
        assert_eq!(ago(3), "just now");
        assert_eq!(ago(45), "45 seconds ago");
        assert_eq!(ago(60), "1 minute ago");
        assert_eq!(ago(7200), "2 hours ago");
        assert_eq!(ago(-7200), "in 2 hours");
        assert_eq!(ago(3 * 86_400), "3 days ago");
    }

    #[test]
    fn tables_align_columns_and_ignore_colour_codes() {
        let plain = Output { json: false, colour: false, interactive: false };
        let mut table = Table::new(&["ID", "STATUS"]);
        table.row(vec!["dep_1".into(), "running".into()]);
        table.row(vec!["dep_long_id".into(), "\x1b[31mfailed\x1b[0m".into()]);
        let text = table.render(&plain, "none");
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first().copied(), Some("ID           STATUS"));
        assert_eq!(lines.get(1).copied(), Some("dep_1        running"));
        assert!(lines.get(2).is_some_and(|l| l.starts_with("dep_long_id  \x1b[31m")));
        assert_eq!(Table::new(&["A"]).render(&plain, "nothing yet"), "nothing yet\n");
    }
}
