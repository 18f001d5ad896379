//! The library's errors as Python exceptions.

use pyo3::exceptions::{PyOSError, PyValueError};
use pyo3::PyErr;

/// A library error as a Python exception: `OSError` for files that cannot be read or
/// written, `ValueError` (with the library's message: tensor, expected, found) otherwise.
pub fn to_py(e: recurrent::Error) -> PyErr {
    match e {
        recurrent::Error::Io { .. } => PyOSError::new_err(e.to_string()),
        _ => PyValueError::new_err(e.to_string()),
    }
}

/// `Result` with a library error, converted at the boundary.
pub trait IntoPy<T> {
    /// Converts the error, if any.
    fn py(self) -> pyo3::PyResult<T>;
}

impl<T> IntoPy<T> for recurrent::Result<T> {
    fn py(self) -> pyo3::PyResult<T> {
        self.map_err(to_py)
    }
}
