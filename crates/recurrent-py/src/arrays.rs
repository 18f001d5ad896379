//! NumPy arrays to the library's array views and back, without copying.
//!
//! The library and rust-numpy may use different `ndarray` versions, so arrays cross as
//! contiguous slices plus shapes.

use ndarray::{ArrayD, ArrayViewD, IxDyn};
use numpy::{PyArray1, PyArrayDyn, PyArrayMethods, PyReadonlyArrayDyn, PyUntypedArrayMethods};
use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;

/// A read-only NumPy argument: float32, any shape.
pub type In<'py> = PyReadonlyArrayDyn<'py, f32>;

/// A NumPy result.
pub type Out<'py> = Bound<'py, PyArrayDyn<f32>>;

/// The array `a` (argument `name`) as a library view. It must be C-contiguous; the Python
/// layer makes it so (`np.ascontiguousarray`, `Tensor.contiguous()`).
pub fn view<'a>(name: &str, a: &'a In<'_>) -> PyResult<ArrayViewD<'a, f32>> {
    let data = a.as_slice().map_err(|_| {
        PyValueError::new_err(format!(
            "tensor `{name}`: expected a C-contiguous float32 array, found strides {:?}",
            a.strides()
        ))
    })?;
    let shape = a.shape().to_vec();
    ArrayViewD::from_shape(IxDyn(&shape), data)
        .map_err(|e| PyValueError::new_err(format!("tensor `{name}`: {e}")))
}

/// [`view`] of an optional argument.
pub fn view_opt<'a>(name: &str, a: &'a Option<In<'_>>) -> PyResult<Option<ArrayViewD<'a, f32>>> {
    a.as_ref().map(|a| view(name, a)).transpose()
}

/// A library array as a NumPy array that takes over its buffer.
pub fn to_numpy<'py>(py: Python<'py>, a: ArrayD<f32>) -> PyResult<Out<'py>> {
    let shape = a.shape().to_vec();
    let values = if a.is_standard_layout() {
        a.into_raw_vec_and_offset().0
    } else {
        a.iter().copied().collect()
    };
    flat_to_numpy(py, values, &shape)
}

/// `values` with `shape` as a NumPy array that takes over the vector.
pub fn flat_to_numpy<'py>(
    py: Python<'py>,
    values: Vec<f32>,
    shape: &[usize],
) -> PyResult<Out<'py>> {
    PyArray1::from_vec(py, values).reshape(shape.to_vec())
}
