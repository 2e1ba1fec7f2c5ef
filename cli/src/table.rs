//! Aligned text tables for people.

pub struct Table {
    head: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub fn new(head: &[&str]) -> Table {
        Table {
            head: head.iter().map(|h| h.to_string()).collect(),
            rows: Vec::new(),
        }
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.rows.push(cells);
    }

    pub fn render(&self) -> String {
        let clean = |s: &str| s.replace(['\n', '\t'], " ");
        let mut widths: Vec<usize> = self.head.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (i, c) in row.iter().enumerate() {
                if i < widths.len() {
                    widths[i] = widths[i].max(clean(c).chars().count());
                }
            }
        }
        let line = |cells: &[String]| {
            let mut out = String::new();
            for (i, c) in cells.iter().enumerate().take(widths.len()) {
                let c = clean(c);
                if i + 1 == widths.len() {
                    out.push_str(&c);
                } else {
                    out.push_str(&format!("{c:<w$}  ", w = widths[i]));
                }
            }
            out.trim_end().to_string() + "\n"
        };
        let mut out = line(&self.head);
        for row in &self.rows {
            out.push_str(&line(row));
        }
        out
    }
}

/// Epoch milliseconds as UTC time, or `-`.
pub fn time(ms: Option<i64>) -> String {
    match ms
        .filter(|m| *m > 0)
        .and_then(chrono::DateTime::from_timestamp_millis)
    {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S%.3f").to_string(),
        None => "-".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up() {
        let mut t = Table::new(&["A", "LONGER"]);
        t.row(vec!["wide cell".into(), "x".into()]);
        assert_eq!(t.render(), "A          LONGER\nwide cell  x\n");
        assert_eq!(time(Some(0)), "-");
        assert_eq!(time(Some(1_000)), "1970-01-01 00:00:01.000");
    }
}
