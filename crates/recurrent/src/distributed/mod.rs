//! Collective operations for synchronous data parallelism: every process (a *rank*) holds
//! the same model, computes the gradients of its share of each batch, and the shares'
//! gradients are summed across ranks before the optimizer step, so that all ranks take the
//! same step.
//!
//! [`Collective`] is the small interface the training loop ([`crate::models::fit()`]) needs.
//! [`SingleProcess`] is the default (one rank; every operation leaves its buffer as it is);
//! with the cargo feature `mpi`, `Mpi` runs the operations over MPI (Open MPI or MPICH),
//! for jobs started by `mpirun`; [`ThreadRanks`] are ranks as threads of one process. A
//! program makes one collective the process-wide default with [`install`]; [`current`]
//! returns it.

#[cfg(feature = "mpi")]
mod mpi;
mod threads;

#[cfg(feature = "mpi")]
pub use self::mpi::{Mpi, MpiSession};

pub use threads::ThreadRanks;

use crate::error::Result;
use std::ops::Range;
use std::sync::OnceLock;

/// The collective operations of synchronous data parallelism. Every rank must call the
/// same operations in the same order with buffers of the same length.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..size()`.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Replaces `buf` on every rank with the element-wise sum of all ranks' `buf`.
    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()>;
    /// [`Collective::all_reduce_sum`] for `f64` values (losses and counts).
    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()>;
    /// Replaces `buf` on every rank with `root`'s `buf`.
    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()>;
    /// Replaces `bytes` on every rank with `root`'s `bytes` (whatever their lengths were).
    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()>;
    /// Ends every rank of the job at once with `code` (after an error on this rank, so that
    /// the others do not wait for it forever). The single process just exits.
    fn abort(&self, code: i32) -> !;
}

/// One process alone: rank 0 of 1.
#[derive(Debug, Clone, Copy, Default)]
pub struct SingleProcess;

impl Collective for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn all_reduce_sum(&self, _buf: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _buf: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _buf: &mut [f32], _root: usize) -> Result<()> {
        Ok(())
    }
    fn broadcast_bytes(&self, _bytes: &mut Vec<u8>, _root: usize) -> Result<()> {
        Ok(())
    }
    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}

/// The number of ranks of the job this process belongs to, as `mpirun`/`mpiexec` (Open
/// MPI, MPICH, or a PMI launcher such as Slurm's) tells its processes, without
/// initialising MPI; `None` outside such a job.
pub fn launcher_world_size() -> Option<usize> {
    ["OMPI_COMM_WORLD_SIZE", "PMI_SIZE"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse().ok())
}

static INSTALLED: OnceLock<Box<dyn Collective>> = OnceLock::new();

/// Makes `collective` the process-wide default that [`current`] returns (and so the one
/// [`crate::models::fit()`] trains with). Only the first call has an effect; it returns
/// whether this one did.
pub fn install(collective: Box<dyn Collective>) -> bool {
    INSTALLED.set(collective).is_ok()
}

/// The installed collective, or [`SingleProcess`] if none was installed.
pub fn current() -> &'static dyn Collective {
    match INSTALLED.get() {
        Some(c) => c.as_ref(),
        None => &SingleProcess,
    }
}

/// Which share of every batch a rank computes: `index` of `count` equal shares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Share {
    /// This rank's share, `0..count`.
    pub index: usize,
    /// Number of shares (ranks).
    pub count: usize,
}

impl Share {
    /// The share of `collective`'s rank.
    pub fn of(collective: &dyn Collective) -> Self {
        Share {
            index: collective.rank(),
            count: collective.size(),
        }
    }

    /// The whole batch (one share).
    pub fn whole() -> Self {
        Share { index: 0, count: 1 }
    }

    /// This share's contiguous part of `0..n`: shares differ in length by at most one,
    /// and together they cover `0..n` in order.
    pub fn range(&self, n: usize) -> Range<usize> {
        self.index * n / self.count..(self.index + 1) * n / self.count
    }

    /// This share's part of `batch` and a random stream of its own: one seed per share is
    /// drawn from `rng` (so every rank draws the same numbers) and this share's taken.
    pub fn part<'a>(
        &self,
        batch: &'a [usize],
        rng: &mut impl rand::Rng,
    ) -> (&'a [usize], rand::rngs::StdRng) {
        let seeds: Vec<u64> = (0..self.count).map(|_| rng.gen()).collect();
        let own = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seeds[self.index]);
        (&batch[self.range(batch.len())], own)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The shares of `0..n` are contiguous, in order, cover it exactly and differ in length
    /// by at most one, for every `n` and count (more shares than items included).
    #[test]
    fn shares_cover_the_batch_in_order() {
        for count in 1..=7 {
            for n in 0..40 {
                let ranges: Vec<Range<usize>> = (0..count)
                    .map(|index| Share { index, count }.range(n))
                    .collect();
                assert_eq!(ranges[0].start, 0);
                assert_eq!(ranges[count - 1].end, n);
                for w in ranges.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                let lens: Vec<usize> = ranges.iter().map(|r| r.len()).collect();
                let (min, max) = (lens.iter().min().unwrap(), lens.iter().max().unwrap());
                assert!(max - min <= 1, "n {n}, {count} shares: {lens:?}");
            }
        }
    }

    /// The single process is rank 0 of 1 and leaves every buffer as it is.
    #[test]
    fn single_process_leaves_buffers_alone() {
        let c = SingleProcess;
        assert_eq!((c.rank(), c.size()), (0, 1));
        let mut a = vec![1.5f32, -2.0];
        c.all_reduce_sum(&mut a).unwrap();
        c.broadcast(&mut a, 0).unwrap();
        assert_eq!(a, vec![1.5, -2.0]);
        let mut b = b"model".to_vec();
        c.broadcast_bytes(&mut b, 0).unwrap();
        assert_eq!(b, b"model");
        assert_eq!(Share::of(&c), Share::whole());
    }
}
