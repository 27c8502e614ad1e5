//! What a report table is: a title, columns and rows of cells, independent of any format. The
//! tables themselves are built in [`super::tables`]; the renderers (`terminal`, `markdown`,
//! `html`, `csv_out`) only lay them out.
//!
//! A CSV file and a person see one table differently: the file (like the ClickHouse query of
//! the same name) keeps raw keys (country "", AS 0, the AS number and name apart) and rates with
//! six decimals, while people get labels (`unknown`, `AS64500 Example Org`) and percentages. So
//! each [`Column`] says whether the file has it, people have it, or both, and a [`Cell::Rate`]
//! is formatted by whoever shows it.

use super::model::{fmt_percent, fmt_rate};

/// One cell.
#[derive(Clone, Debug, PartialEq)]
pub enum Cell {
    /// Shown as it is.
    Text(String),
    /// A rate: six decimals in files ([`fmt_rate`]), a percentage for people ([`fmt_percent`]).
    Rate(f64),
    /// A word of the data's vocabulary (a verdict, a finding kind, a policy type), which
    /// Markdown sets as code. `marked` rows are the ones the table's [`Table::note`] speaks of.
    Code {
        /// The word.
        text: String,
        /// Whether the row is marked.
        marked: bool,
    },
}

impl Cell {
    /// Any value shown as it is (numbers, addresses, days, names).
    pub fn text(value: impl ToString) -> Cell {
        Cell::Text(value.to_string())
    }

    /// An unmarked word of the data's vocabulary.
    pub fn code(word: impl ToString) -> Cell {
        Cell::Code {
            text: word.to_string(),
            marked: false,
        }
    }

    /// The cell as a CSV file holds it.
    pub fn for_file(&self) -> String {
        match self {
            Cell::Text(s) | Cell::Code { text: s, .. } => s.clone(),
            Cell::Rate(r) => fmt_rate(*r),
        }
    }

    /// The cell for people, as plain text (the terminal, HTML).
    pub fn for_people(&self) -> String {
        match self {
            Cell::Text(s) | Cell::Code { text: s, .. } => s.clone(),
            Cell::Rate(r) => fmt_percent(*r),
        }
    }
}

/// One column: its name in the CSV file, its heading for people, or both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Column {
    /// Its name in the CSV file (the query's column name); `None`: not in the file.
    pub file: Option<&'static str>,
    /// Its heading for people; `None`: only in the file.
    pub label: Option<&'static str>,
}

impl Column {
    /// A column of the file and of people's tables.
    pub const fn both(file: &'static str, label: &'static str) -> Column {
        Column {
            file: Some(file),
            label: Some(label),
        }
    }

    /// A column only the file has (raw keys people see as one label).
    pub const fn file(name: &'static str) -> Column {
        Column {
            file: Some(name),
            label: None,
        }
    }

    /// A column only people see (a label made of raw keys).
    pub const fn people(label: &'static str) -> Column {
        Column {
            file: None,
            label: Some(label),
        }
    }
}

/// One table of the report.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Table {
    /// The stem of its CSV file, the same as its query in `queries/`; `None`: no file.
    pub file: Option<&'static str>,
    /// Its heading for people; `None`: only a file.
    pub title: Option<&'static str>,
    /// A sentence shown under the title, about the marked rows.
    pub note: Option<&'static str>,
    /// Its rows are ranked, most important first, and people are shown only the first few
    /// (how many is the renderer's choice: a terminal has less room than a page). Files have
    /// every row.
    pub ranked: bool,
    /// Its columns.
    pub columns: Vec<Column>,
    /// Its rows, a cell per column.
    pub rows: Vec<Vec<Cell>>,
}

/// A table as one audience sees it: the headings of its columns and the cells under them.
pub struct View<'a> {
    /// Column headings.
    pub header: Vec<&'static str>,
    /// Rows of cells, in the order of `header`.
    pub rows: Vec<Vec<&'a Cell>>,
}

impl View<'_> {
    /// The position of the column headed `label`; a renderer asking for a column the table
    /// does not have is a programming error.
    pub fn column(&self, label: &str) -> usize {
        self.header
            .iter()
            .position(|h| *h == label)
            .unwrap_or_else(|| panic!("no column {label:?} in {:?}", self.header))
    }
}

impl Table {
    /// The table as its CSV file has it: every row.
    pub fn for_file(&self) -> View<'_> {
        self.view(|c| c.file, usize::MAX)
    }

    /// The table as people see it: at most `ranked_rows` rows when it is [`Table::ranked`].
    pub fn for_people(&self, ranked_rows: usize) -> View<'_> {
        self.view(
            |c| c.label,
            if self.ranked { ranked_rows } else { usize::MAX },
        )
    }

    fn view(&self, heading: impl Fn(&Column) -> Option<&'static str>, max_rows: usize) -> View<'_> {
        let kept: Vec<usize> = (0..self.columns.len())
            .filter(|&i| heading(&self.columns[i]).is_some())
            .collect();
        View {
            header: kept
                .iter()
                .filter_map(|&i| heading(&self.columns[i]))
                .collect(),
            rows: self
                .rows
                .iter()
                .take(max_rows)
                .map(|row| kept.iter().map(|&i| &row[i]).collect())
                .collect(),
        }
    }
}
