//! `recurrent._recurrent`: the extension module behind the Python package `recurrent`.
//!
//! It exposes the library's recurrent stack ([`recurrent::Rnn`]) and cells
//! ([`recurrent::Cell`]) to Python with NumPy arrays in and out; the Python package builds
//! PyTorch's module interface (`recurrent.LSTM`, `recurrent.torch.LSTM`, ...) on top. Every
//! computation releases the GIL and runs on the pool set by `set_num_threads`.

#![warn(missing_docs)]

mod arrays;
mod cell;
mod errors;
mod stack;
mod threads;

use pyo3::prelude::*;

/// Sets the number of threads the kernels use (default: one per core).
#[pyfunction]
fn set_num_threads(n: usize) -> PyResult<()> {
    threads::set(n)
}

/// The number of threads the kernels use.
#[pyfunction]
fn get_num_threads() -> usize {
    threads::current()
}

/// The kernel level chosen for this CPU at run time (`amx`, `avx512`, `avx2` or `portable`).
#[pyfunction]
fn kernel_level() -> &'static str {
    recurrent::kernels::cpu::level().name()
}

/// The extension module.
#[pymodule]
fn _recurrent(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<stack::NativeRnn>()?;
    m.add_class::<stack::NativeTape>()?;
    m.add_class::<cell::NativeCell>()?;
    m.add_class::<cell::NativeCellTape>()?;
    m.add_function(wrap_pyfunction!(set_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(get_num_threads, m)?)?;
    m.add_function(wrap_pyfunction!(kernel_level, m)?)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
