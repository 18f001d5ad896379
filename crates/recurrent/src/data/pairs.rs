//! Sequence pairs (source, target) from a TSV or CSV file with a header, for
//! encoder-decoder models.

use super::data_error;
use crate::error::Result;
use std::path::Path;

/// Pairs of texts read from a table.
#[derive(Debug, Clone, PartialEq)]
pub struct TextPairs {
    /// Names of the source and target columns.
    pub columns: (String, String),
    /// `(source, target)` of each data row; the target is empty for a one-column file.
    pub pairs: Vec<(String, String)>,
}

/// Which columns hold the pairs: by name, or the first two.
#[derive(Debug, Clone, Default)]
pub struct PairColumns<'a> {
    /// Source column name (default: the first column).
    pub source: Option<&'a str>,
    /// Target column name (default: the second column).
    pub target: Option<&'a str>,
    /// Whether a file with a source column only is accepted (targets are then empty).
    pub sources_only: bool,
}

/// Reads pairs from `path` (see [`parse_pairs`]).
pub fn read_pairs(path: impl AsRef<Path>, columns: &PairColumns) -> Result<TextPairs> {
    let path = path.as_ref();
    parse_pairs(
        &crate::io::read_utf8(path)?,
        &path.display().to_string(),
        columns,
    )
}

/// Parses a table of pairs with a header: tab-separated when the header line has a tab,
/// else comma-separated (quoted fields as CSV). Every data row must have the chosen
/// columns and a non-empty source and target; errors name the line. `shown` names the
/// source in errors.
pub fn parse_pairs(text: &str, shown: &str, columns: &PairColumns) -> Result<TextPairs> {
    let header_line = text.lines().next().unwrap_or("");
    let delimiter = if header_line.contains('\t') {
        b'\t'
    } else {
        b','
    };
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .delimiter(delimiter)
        .flexible(true)
        .quoting(delimiter == b',')
        .from_reader(text.as_bytes());
    let header: Vec<String> = rdr
        .headers()
        .map_err(|e| data_error(shown, 1, e))?
        .iter()
        .map(|h| h.trim().to_string())
        .collect();
    let find = |name: Option<&str>, default: usize, what: &str| -> Result<Option<usize>> {
        match name {
            Some(n) => header.iter().position(|h| h == n).map(Some).ok_or_else(|| {
                data_error(
                    shown,
                    1,
                    format!(
                        "no {what} column {n:?}; the header has: {}",
                        header.join(", ")
                    ),
                )
            }),
            None => Ok((default < header.len()).then_some(default)),
        }
    };
    let source =
        find(columns.source, 0, "source")?.ok_or_else(|| data_error(shown, 1, "no header"))?;
    let target = find(columns.target, 1, "target")?;
    if target.is_none() && !columns.sources_only {
        return Err(data_error(
            shown,
            1,
            "a header with a source and a target column is needed",
        ));
    }
    let mut pairs = Vec::new();
    for (i, record) in rdr.records().enumerate() {
        let line = i + 2;
        let record = record.map_err(|e| data_error(shown, line, format!("malformed row ({e})")))?;
        if record.len() == 1 && record.get(0).is_some_and(|f| f.trim().is_empty()) {
            continue;
        }
        let field = |c: usize, what: &str| -> Result<String> {
            let v = record.get(c).ok_or_else(|| {
                data_error(
                    shown,
                    line,
                    format!("{} fields, no {what} (column {})", record.len(), c + 1),
                )
            })?;
            let v = v.trim();
            if v.is_empty() {
                return Err(data_error(shown, line, format!("empty {what}")));
            }
            Ok(v.to_string())
        };
        let s = field(source, "source")?;
        let t = match target {
            Some(c) => field(c, "target")?,
            None => String::new(),
        };
        pairs.push((s, t));
    }
    if pairs.is_empty() {
        return Err(data_error(shown, 0, "no data rows"));
    }
    let name = |c: Option<usize>| c.map_or(String::new(), |c| header[c].clone());
    Ok(TextPairs {
        columns: (header[source].clone(), name(target)),
        pairs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tsv_and_csv_pairs_with_named_columns() {
        let tsv = "word\tphonemes\nab\tAE1 B\n\ncat\tK AE1 T\n";
        let p = parse_pairs(tsv, "t.tsv", &PairColumns::default()).unwrap();
        assert_eq!(
            p.pairs,
            vec![
                ("ab".into(), "AE1 B".into()),
                ("cat".into(), "K AE1 T".into())
            ]
        );
        let csv = "id,out,in\n1,\"x, y\",a\n";
        let cols = PairColumns {
            source: Some("in"),
            target: Some("out"),
            sources_only: false,
        };
        let p = parse_pairs(csv, "t.csv", &cols).unwrap();
        assert_eq!(p.pairs, vec![("a".into(), "x, y".into())]);
        assert_eq!(p.columns, ("in".into(), "out".into()));
    }

    #[test]
    fn bad_rows_name_their_line() {
        let cols = PairColumns::default();
        let err = parse_pairs("a\tb\nx\ty\nlonely\n", "f.tsv", &cols)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("f.tsv:3") && err.contains("no target"),
            "{err}"
        );
        let err = parse_pairs("a\tb\nx\t \n", "f.tsv", &cols)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("f.tsv:2") && err.contains("empty target"),
            "{err}"
        );
        let err = parse_pairs("a\tb\n", "f.tsv", &cols)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no data rows"), "{err}");
        let err = parse_pairs("a\n", "f.tsv", &cols).unwrap_err().to_string();
        assert!(err.contains("target column"), "{err}");
        let one = PairColumns {
            sources_only: true,
            ..Default::default()
        };
        let p = parse_pairs("word\nab\n", "w.csv", &one).unwrap();
        assert_eq!(p.pairs, vec![("ab".into(), String::new())]);
    }
}
