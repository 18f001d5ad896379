//! Time series from a CSV file with a header: an optional date column and numeric columns.

use super::data_error;
use crate::error::Result;
use std::path::Path;

/// What to do with empty or `NA` cells.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum MissingValues {
    /// A missing value is an error naming its line and column (the default).
    #[default]
    Error,
    /// Missing values are filled by linear interpolation between their neighbours (the
    /// nearest value at either end).
    Interpolate,
}

/// A table of numeric columns over time.
#[derive(Debug, Clone, PartialEq)]
pub struct SeriesTable {
    /// Date/time labels (the first column when it is not numeric), else row numbers.
    pub index: Vec<String>,
    /// Names of the numeric columns.
    pub columns: Vec<String>,
    /// `values[c][t]`: column `c` at time `t`.
    pub values: Vec<Vec<f32>>,
}

impl SeriesTable {
    /// Position of a column by name, or an error listing the available ones.
    pub fn column(&self, name: &str) -> Result<usize> {
        self.columns.iter().position(|c| c == name).ok_or_else(|| {
            crate::error::Error::Invalid(format!(
                "unknown column {name:?}; numeric columns are: {}",
                self.columns.join(", ")
            ))
        })
    }

    /// Number of time steps.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    /// Whether the table has no rows.
    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }
}

fn is_missing(s: &str) -> bool {
    let t = s.trim();
    t.is_empty() || t.eq_ignore_ascii_case("na") || t.eq_ignore_ascii_case("nan") || t == "?"
}

/// Reads a CSV time series. The first column is taken as the time index when its first
/// value is not a number or its name is a time word (`date`, `year`, `month`, `time`, ...);
/// every other column must be numeric.
pub fn read_series_csv(path: impl AsRef<Path>, missing: MissingValues) -> Result<SeriesTable> {
    let path = path.as_ref();
    parse_series_csv(
        &crate::io::read_utf8(path)?,
        &path.display().to_string(),
        missing,
    )
}

/// Parses CSV time-series text (see [`read_series_csv`]); `shown` names the source in errors.
pub fn parse_series_csv(text: &str, shown: &str, missing: MissingValues) -> Result<SeriesTable> {
    let shown = shown.to_string();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| data_error(&shown, 1, e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let records: Vec<csv::StringRecord> = rdr
        .records()
        .enumerate()
        .map(|(i, r)| r.map_err(|e| data_error(&shown, i + 2, format!("malformed row ({e})"))))
        .collect::<Result<_>>()?;
    if records.is_empty() {
        return Err(data_error(&shown, 0, "no data rows"));
    }
    const TIME_NAMES: [&str; 10] = [
        "date",
        "time",
        "timestamp",
        "datetime",
        "year",
        "month",
        "week",
        "day",
        "period",
        "ds",
    ];
    let first_is_index = records[0]
        .get(0)
        .is_some_and(|v| !is_missing(v) && v.trim().parse::<f64>().is_err())
        || TIME_NAMES.contains(&header[0].to_ascii_lowercase().as_str());
    let start = usize::from(first_is_index);
    let columns: Vec<String> = header[start..].to_vec();
    if columns.is_empty() {
        return Err(data_error(&shown, 1, "no numeric columns"));
    }
    let mut values = vec![Vec::with_capacity(records.len()); columns.len()];
    let mut index = Vec::with_capacity(records.len());
    for (i, rec) in records.iter().enumerate() {
        let line = i + 2;
        if rec.len() != header.len() {
            return Err(data_error(
                &shown,
                line,
                format!("expected {} fields, found {}", header.len(), rec.len()),
            ));
        }
        index.push(if first_is_index {
            rec[0].trim().to_string()
        } else {
            i.to_string()
        });
        for (c, col) in columns.iter().enumerate() {
            let cell = &rec[start + c];
            if is_missing(cell) {
                if missing == MissingValues::Error {
                    return Err(data_error(
                        &shown,
                        line,
                        format!("missing value in column {col:?} (MissingValues::Interpolate fills gaps)"),
                    ));
                }
                values[c].push(f32::NAN);
                continue;
            }
            let v: f32 = cell.trim().parse().map_err(|_| {
                data_error(
                    &shown,
                    line,
                    format!("column {col:?}: {:?} is not a number", cell.trim()),
                )
            })?;
            values[c].push(v);
        }
    }
    for (c, col) in values.iter_mut().zip(&columns) {
        if c.iter().all(|v| v.is_nan()) {
            return Err(data_error(
                &shown,
                0,
                format!("column {col:?} has no values"),
            ));
        }
        interpolate(c);
    }
    Ok(SeriesTable {
        index,
        columns,
        values,
    })
}

/// Fills NaN gaps linearly (constant at the ends).
fn interpolate(v: &mut [f32]) {
    let known: Vec<usize> = (0..v.len()).filter(|&i| !v[i].is_nan()).collect();
    for i in 0..v.len() {
        if !v[i].is_nan() {
            continue;
        }
        let next = known.iter().position(|&k| k > i);
        v[i] = match next {
            Some(0) => v[known[0]],
            None => v[*known.last().expect("some value")],
            Some(n) => {
                let (a, b) = (known[n - 1], known[n]);
                let w = (i - a) as f32 / (b - a) as f32;
                v[a] * (1.0 - w) + v[b] * w
            }
        };
    }
}
