//! Labelled, possibly multivariate, possibly unequal-length sequences.

use super::data_error;
use crate::error::Result;
use ndarray::Array2;
use std::collections::BTreeMap;
use std::path::Path;

/// A set of labelled sequences: sequence `i` is `(T_i, D)`.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledSequences {
    /// The sequences, each `(T_i, D)` with the same `D`.
    pub sequences: Vec<Array2<f32>>,
    /// One label per sequence, as written in the file.
    pub labels: Vec<String>,
}

impl LabelledSequences {
    /// Number of features `D` (0 when empty).
    pub fn dims(&self) -> usize {
        self.sequences.first().map_or(0, |s| s.ncols())
    }

    /// Number of sequences.
    pub fn len(&self) -> usize {
        self.sequences.len()
    }

    /// Whether there are no sequences.
    pub fn is_empty(&self) -> bool {
        self.sequences.is_empty()
    }
}

/// Reads a `.ts` file (UEA/UCR archive format) or a long CSV, by extension.
pub fn read_sequences(path: impl AsRef<Path>) -> Result<LabelledSequences> {
    let path = path.as_ref();
    match path.extension().and_then(|e| e.to_str()) {
        Some(ext) if ext.eq_ignore_ascii_case("ts") => read_ts(path),
        _ => read_long_csv(path),
    }
}

fn parse_value(s: &str, path: &str, line: usize, what: &str) -> Result<f32> {
    let t = s.trim();
    match t.parse::<f32>() {
        Ok(v) if v.is_finite() => Ok(v),
        Ok(_) => Err(data_error(
            path,
            line,
            format!("{what}: non-finite value {t:?}"),
        )),
        Err(_) if t.is_empty() || t == "?" || t.eq_ignore_ascii_case("nan") => {
            Err(data_error(path, line, format!("{what}: missing value")))
        }
        Err(_) => Err(data_error(
            path,
            line,
            format!("{what}: {t:?} is not a number"),
        )),
    }
}

/// Reads the long CSV format `case,label,t,x0,...,x{D-1}`: one row per time step, the rows
/// of a case in time order (a header row is required).
pub fn read_long_csv(path: impl AsRef<Path>) -> Result<LabelledSequences> {
    let path = path.as_ref();
    parse_long_csv(&crate::io::read_utf8(path)?, &path.display().to_string())
}

/// Parses long-CSV text (see [`read_long_csv`]); `shown` names the source in errors.
pub fn parse_long_csv(text: &str, shown: &str) -> Result<LabelledSequences> {
    let shown = shown.to_string();
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(text.as_bytes());
    let header = rdr.headers().map_err(|e| data_error(&shown, 1, e))?.clone();
    let cols: Vec<&str> = header.iter().map(str::trim).collect();
    if cols.len() < 4 || cols[0] != "case" || cols[1] != "label" || cols[2] != "t" {
        return Err(data_error(
            &shown,
            1,
            format!(
                "expected a header `case,label,t,x0,...`, found {:?}",
                cols.join(",")
            ),
        ));
    }
    let dims = cols.len() - 3;
    let mut order: Vec<String> = Vec::new();
    let mut cases: BTreeMap<String, (String, Vec<f32>, usize)> = BTreeMap::new();
    for (i, rec) in rdr.records().enumerate() {
        let line = i + 2;
        let rec = rec.map_err(|e| data_error(&shown, line, format!("malformed row ({e})")))?;
        if rec.len() != cols.len() {
            return Err(data_error(
                &shown,
                line,
                format!("expected {} fields, found {}", cols.len(), rec.len()),
            ));
        }
        let case = rec[0].trim().to_string();
        let label = rec[1].trim().to_string();
        let entry = cases.entry(case.clone()).or_insert_with(|| {
            order.push(case.clone());
            (label.clone(), Vec::new(), 0)
        });
        if entry.0 != label {
            return Err(data_error(
                &shown,
                line,
                format!("case {case} changes label from {:?} to {label:?}", entry.0),
            ));
        }
        for (k, field) in rec.iter().skip(3).enumerate() {
            entry.1.push(parse_value(
                field,
                &shown,
                line,
                &format!("column {}", cols[3 + k]),
            )?);
        }
        entry.2 += 1;
    }
    if order.is_empty() {
        return Err(data_error(&shown, 0, "no data rows"));
    }
    let mut out = LabelledSequences {
        sequences: Vec::new(),
        labels: Vec::new(),
    };
    for case in order {
        let (label, values, steps) = cases.remove(&case).expect("case present");
        out.sequences
            .push(Array2::from_shape_vec((steps, dims), values).expect("shape"));
        out.labels.push(label);
    }
    Ok(out)
}

/// Reads the UEA/UCR archive's `.ts` format: `@` header lines, then one case per line,
/// dimensions separated by `:`, values by `,`, the class label last. Equal and unequal
/// lengths, univariate and multivariate; missing values (`?`) are an error.
pub fn read_ts(path: impl AsRef<Path>) -> Result<LabelledSequences> {
    let path = path.as_ref();
    parse_ts(&crate::io::read_utf8(path)?, &path.display().to_string())
}

/// Parses `.ts` text (see [`read_ts`]); `shown` names the source in errors.
pub fn parse_ts(text: &str, shown: &str) -> Result<LabelledSequences> {
    let shown = shown.to_string();
    let mut in_data = false;
    let mut has_labels = true;
    let mut header = TsHeader::default();
    let mut out = LabelledSequences {
        sequences: Vec::new(),
        labels: Vec::new(),
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let l = raw.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        if !in_data {
            let lower = l.to_ascii_lowercase();
            if lower.starts_with("@timestamps") && lower.ends_with("true") {
                return Err(data_error(
                    &shown,
                    line,
                    "time-stamped .ts files are not supported",
                ));
            }
            if lower.starts_with("@classlabel") && lower.split_whitespace().nth(1) == Some("false")
            {
                has_labels = false;
            }
            header.read_line(l, &shown, line)?;
            if lower.starts_with("@data") {
                in_data = true;
            }
            continue;
        }
        let mut parts: Vec<&str> = l.split(':').collect();
        if !has_labels {
            return Err(data_error(
                &shown,
                line,
                "the file has no class labels (@classLabel false)",
            ));
        }
        let label = parts.pop().unwrap_or_default().trim().to_string();
        if parts.is_empty() || label.is_empty() {
            return Err(data_error(&shown, line, "expected `values:...:label`"));
        }
        let dims: Vec<Vec<f32>> = parts
            .iter()
            .enumerate()
            .map(|(d, p)| {
                p.split(',')
                    .map(|v| parse_value(v, &shown, line, &format!("dimension {d}")))
                    .collect::<Result<Vec<f32>>>()
            })
            .collect::<Result<_>>()?;
        let steps = dims[0].len();
        if let Some(d) = dims.iter().position(|v| v.len() != steps) {
            return Err(data_error(
                &shown,
                line,
                format!(
                    "dimension {d} has {} values, dimension 0 has {steps}",
                    dims[d].len()
                ),
            ));
        }
        if let Some(first) = out.sequences.first() {
            if first.ncols() != dims.len() {
                return Err(data_error(
                    &shown,
                    line,
                    format!(
                        "{} dimensions, earlier cases have {}",
                        dims.len(),
                        first.ncols()
                    ),
                ));
            }
        }
        header.check_case(
            dims.len(),
            steps,
            &label,
            out.sequences.first(),
            &shown,
            line,
        )?;
        let seq = Array2::from_shape_fn((steps, dims.len()), |(t, d)| dims[d][t]);
        out.sequences.push(seq);
        out.labels.push(label);
    }
    if out.sequences.is_empty() {
        return Err(data_error(&shown, 0, "no cases after @data"));
    }
    Ok(out)
}

/// What a `.ts` header declares about the data, checked against every case.
#[derive(Debug, Default)]
struct TsHeader {
    /// `@dimensions N`, or 1 for `@univariate true`.
    dimensions: Option<usize>,
    /// `@equalLength true`.
    equal_length: bool,
    /// `@seriesLength N` (meaningful with equal lengths).
    series_length: Option<usize>,
    /// The labels listed after `@classLabel true`.
    labels: Option<Vec<String>>,
}

impl TsHeader {
    /// Records a header line (other `@` keys are ignored).
    fn read_line(&mut self, l: &str, shown: &str, line: usize) -> Result<()> {
        let mut words = l.split_whitespace();
        let key = words.next().unwrap_or_default().to_ascii_lowercase();
        let value = words.next().unwrap_or_default();
        let count = |what: &str| -> Result<usize> {
            value.parse().map_err(|_| {
                data_error(
                    shown,
                    line,
                    format!("{what}: expected a count, found {value:?}"),
                )
            })
        };
        let flag = value.eq_ignore_ascii_case("true");
        match key.as_str() {
            "@dimensions" => self.dimensions = Some(count("@dimensions")?),
            "@univariate" if flag => self.dimensions = Some(1),
            "@equallength" => self.equal_length = flag,
            "@serieslength" => self.series_length = Some(count("@seriesLength")?),
            "@classlabel" if flag => {
                self.labels = Some(l.split_whitespace().skip(2).map(str::to_string).collect())
            }
            _ => {}
        }
        Ok(())
    }

    /// Checks one case (`dims` dimensions of `steps` values, `label`) against the header
    /// and the first case.
    fn check_case(
        &self,
        dims: usize,
        steps: usize,
        label: &str,
        first: Option<&Array2<f32>>,
        shown: &str,
        line: usize,
    ) -> Result<()> {
        let err = |m: String| Err(data_error(shown, line, m));
        if let Some(d) = self.dimensions.filter(|&d| d != dims) {
            return err(format!("{dims} dimensions, the header declares {d}"));
        }
        if self.equal_length {
            if let Some(n) = self.series_length.filter(|&n| n != steps) {
                return err(format!(
                    "{steps} values, the header declares @seriesLength {n}"
                ));
            }
            if let Some(f) = first.filter(|f| f.nrows() != steps) {
                return err(format!(
                    "{steps} values, the first case has {} and the header declares @equalLength true",
                    f.nrows()
                ));
            }
        }
        match &self.labels {
            Some(labels) if !labels.is_empty() && !labels.iter().any(|l| l == label) => {
                err(format!(
                    "label {label:?} is not among the header's @classLabel values ({})",
                    labels.join(" ")
                ))
            }
            _ => Ok(()),
        }
    }
}
