//! The thread pool every computation runs on, with the GIL released.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::{Arc, RwLock};

/// The pool of `set_num_threads`, or one thread per core until it is called.
static POOL: RwLock<Option<Arc<rayon::ThreadPool>>> = RwLock::new(None);

/// Replaces the pool by one of `n` threads.
pub fn set(n: usize) -> PyResult<()> {
    if n == 0 {
        return Err(PyValueError::new_err(
            "set_num_threads: expected at least 1 thread, found 0",
        ));
    }
    let pool = build(Some(n))?;
    *POOL.write().unwrap_or_else(|e| e.into_inner()) = Some(pool);
    Ok(())
}

/// Threads of the current pool.
pub fn current() -> usize {
    pool().map_or(1, |p| p.current_num_threads())
}

fn build(threads: Option<usize>) -> PyResult<Arc<rayon::ThreadPool>> {
    let mut builder = rayon::ThreadPoolBuilder::new();
    if let Some(n) = threads {
        builder = builder.num_threads(n);
    }
    let pool = builder
        .build()
        .map_err(|e| PyValueError::new_err(format!("thread pool: {e}")))?;
    Ok(Arc::new(pool))
}

fn pool() -> PyResult<Arc<rayon::ThreadPool>> {
    if let Some(p) = POOL.read().unwrap_or_else(|e| e.into_inner()).as_ref() {
        return Ok(p.clone());
    }
    let mut slot = POOL.write().unwrap_or_else(|e| e.into_inner());
    match slot.as_ref() {
        Some(p) => Ok(p.clone()),
        None => Ok(slot.insert(build(None)?).clone()),
    }
}

/// Runs `f` without the GIL on one of the pool's threads. The kernels' time loops count
/// the calling thread as one of the pool's, so the work must start inside it (called
/// from outside, a loop would run one thread more than the pool has).
pub fn compute<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> PyResult<T> {
    let pool = pool()?;
    Ok(py.detach(|| pool.install(f)))
}
