//! The thread pool every computation runs on, with the GIL released.

use pyo3::exceptions::PyValueError;
use pyo3::prelude::*;
use std::sync::{Arc, RwLock};

/// `None` until `set_num_threads`: rayon's global pool (one thread per core).
static POOL: RwLock<Option<Arc<rayon::ThreadPool>>> = RwLock::new(None);

/// Replaces the pool by one of `n` threads.
pub fn set(n: usize) -> PyResult<()> {
    if n == 0 {
        return Err(PyValueError::new_err(
            "set_num_threads: expected at least 1 thread, found 0",
        ));
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(n)
        .build()
        .map_err(|e| PyValueError::new_err(format!("set_num_threads({n}): {e}")))?;
    *POOL.write().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(pool));
    Ok(())
}

/// Threads of the current pool.
pub fn current() -> usize {
    match pool() {
        Some(p) => p.current_num_threads(),
        None => rayon::current_num_threads(),
    }
}

fn pool() -> Option<Arc<rayon::ThreadPool>> {
    POOL.read().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Runs `f` without the GIL on the current pool.
pub fn compute<T: Send>(py: Python<'_>, f: impl FnOnce() -> T + Send) -> T {
    py.detach(|| match pool() {
        Some(p) => p.install(f),
        None => f(),
    })
}
