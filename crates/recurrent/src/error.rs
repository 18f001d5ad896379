//! The one error type of the library.

use thiserror::Error;

/// Everything that can go wrong when user data meets the library. New kinds may be added,
/// so a `match` needs a catch-all arm.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum Error {
    /// A tensor does not have the shape the operation needs.
    #[error("tensor `{name}`: expected shape {expected}, found {found:?}")]
    Shape {
        /// Tensor name (`input`, `h0`, `weight_ih_l0`, ...).
        name: String,
        /// What was expected, in words or as a shape.
        expected: String,
        /// The shape that was found.
        found: Vec<usize>,
    },
    /// A configuration value is invalid or inconsistent.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// A tensor the model or operation needs is missing.
    #[error("missing tensor `{name}` in {place}")]
    Missing {
        /// Tensor name.
        name: String,
        /// Where it was looked for (a file name or "state dict").
        place: String,
    },
    /// A tensor contains NaN or infinite values.
    #[error("tensor `{name}` contains a non-finite value ({value}) at flat index {index}")]
    NonFinite {
        /// Tensor name.
        name: String,
        /// Flat index of the first offending element.
        index: usize,
        /// The value found there.
        value: f32,
    },
    /// Sequence lengths are invalid for the batch.
    #[error("invalid lengths: {0}")]
    Lengths(String),
    /// A file could not be read or written.
    #[error("{path}: {message}")]
    File {
        /// File path.
        path: String,
        /// What went wrong.
        message: String,
    },
    /// A file could not be opened, read or written; the operating system's error is kept
    /// (`source.kind()` tells a missing file from a permission problem).
    #[error("{path}: cannot {action}: {source}")]
    Io {
        /// File path.
        path: String,
        /// `"read"` or `"write"`.
        action: &'static str,
        /// What the operating system reported.
        #[source]
        source: std::io::Error,
    },
    /// Training met a non-finite loss, gradient or weight.
    #[error("training diverged at epoch {epoch}, batch {batch}: {cause} (non-finite weights or data, or too high a learning rate); the last checkpoint is kept")]
    Diverged {
        /// 1-based epoch.
        epoch: usize,
        /// 1-based batch within the epoch.
        batch: usize,
        /// What was not finite.
        cause: String,
    },
    /// Any other invalid argument.
    #[error("invalid argument: {0}")]
    Invalid(String),
}

/// Shorthand for results of this crate.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Builds an [`Error::Io`] error.
    pub fn io(path: &std::path::Path, action: &'static str, source: std::io::Error) -> Self {
        Error::Io {
            path: path.display().to_string(),
            action,
            source,
        }
    }

    /// Builds a [`Error::Shape`] error.
    pub fn shape(name: impl Into<String>, expected: impl Into<String>, found: &[usize]) -> Self {
        Error::Shape {
            name: name.into(),
            expected: expected.into(),
            found: found.to_vec(),
        }
    }
}

/// Fails with [`Error::NonFinite`] if `data` holds a NaN or an infinity.
pub fn check_finite(name: &str, data: &[f32]) -> Result<()> {
    match data.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(index) => Err(Error::NonFinite {
            name: name.to_string(),
            index,
            value: data[index],
        }),
    }
}
