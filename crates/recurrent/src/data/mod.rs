//! Reading real data: labelled sequences (long CSV and the UEA/UCR `.ts` format), time
//! series from CSV, UTF-8 text, and sequence pairs (TSV or CSV); feature scaling fitted on training data only.

mod pairs;
mod scaling;
mod sequences;
mod series;
mod split;
mod text;

pub use pairs::{parse_pairs, read_pairs, PairColumns, TextPairs};
pub use scaling::Standardizer;
pub use sequences::{
    parse_long_csv, parse_ts, read_long_csv, read_sequences, read_ts, LabelledSequences,
};
pub use series::{parse_series_csv, read_series_csv, MissingValues, SeriesTable};
pub use split::stratified_split;
pub use text::{read_text, split_validation, Vocabulary};

use crate::error::Error;

/// An error about a data file, with its path and (1-based) line.
pub(crate) fn data_error(path: &str, line: usize, message: impl std::fmt::Display) -> Error {
    Error::File {
        path: if line > 0 {
            format!("{path}:{line}")
        } else {
            path.to_string()
        },
        message: message.to_string(),
    }
}
