//! The report: text tables and medians.

use super::cpu::Transfer;

/// Sorts `runs` by time and returns the median (the upper one of an even count).
pub fn median_of(runs: &mut [Transfer]) -> &Transfer {
    runs.sort_by_key(|t| t.wall);
    &runs[runs.len() / 2]
}

/// A text table: a label column and right-aligned value columns, with section headings.
pub struct Table {
    columns: Vec<String>,
    rows: Vec<(String, Option<Vec<String>>)>,
}

impl Table {
    pub fn new(columns: &[&str]) -> Table {
        Table {
            columns: columns.iter().map(|s| s.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn section(&mut self, title: &str) {
        self.rows.push((title.to_string(), None));
    }

    pub fn row(&mut self, label: &str, values: &[String]) {
        self.rows
            .push((format!("  {label}"), Some(values.to_vec())));
    }

    pub fn render(&self) -> String {
        let label_w = self
            .rows
            .iter()
            .filter(|(_, v)| v.is_some())
            .map(|(l, _)| l.chars().count())
            .max()
            .unwrap_or(0)
            + 2;
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, c)| {
                self.rows
                    .iter()
                    .filter_map(|(_, v)| v.as_ref()?.get(i).map(|s| s.chars().count()))
                    .chain([c.chars().count()])
                    .max()
                    .unwrap_or(0)
                    + 3
            })
            .collect();
        let mut out = format!("{:label_w$}", "");
        for (c, w) in self.columns.iter().zip(&widths) {
            out.push_str(&format!("{c:>w$}"));
        }
        for (label, values) in &self.rows {
            out.push('\n');
            match values {
                None => out.push_str(label),
                Some(values) => {
                    out.push_str(&format!("{label:label_w$}"));
                    for (v, w) in values.iter().zip(&widths) {
                        out.push_str(&format!("{v:>w$}"));
                    }
                }
            }
        }
        out
    }
}
