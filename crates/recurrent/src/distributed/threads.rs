//! [`ThreadRanks`]: the ranks of a job as threads of one process.

use super::Collective;
use crate::error::Result;
use std::sync::{Arc, Barrier, Mutex};

/// A rank of a group of threads that act as the ranks of a job: the collective operations
/// of [`Collective`] between threads of one process, with no MPI. It shows what a
/// data-parallel run computes (the tests compare it with one process) and runs a
/// data-parallel program's logic on one machine without a launcher. Sums are taken in rank
/// order, so results do not depend on which thread arrives first.
pub struct ThreadRanks {
    rank: usize,
    shared: Arc<Shared>,
}

struct Shared {
    size: usize,
    barrier: Barrier,
    /// Each rank's contribution to the operation under way.
    slots: Mutex<Vec<Vec<f64>>>,
    bytes: Mutex<Vec<u8>>,
}

impl ThreadRanks {
    /// The `size` ranks of a new group (at least one), to be moved to one thread each.
    pub fn group(size: usize) -> Vec<ThreadRanks> {
        let size = size.max(1);
        let shared = Arc::new(Shared {
            size,
            barrier: Barrier::new(size),
            slots: Mutex::new(vec![Vec::new(); size]),
            bytes: Mutex::new(Vec::new()),
        });
        (0..size)
            .map(|rank| ThreadRanks {
                rank,
                shared: shared.clone(),
            })
            .collect()
    }

    /// Every rank's `values` summed in rank order, on every rank.
    fn sum(&self, values: impl Iterator<Item = f64>) -> Vec<f64> {
        let s = &self.shared;
        s.slots.lock().expect("no rank panicked")[self.rank] = values.collect();
        s.barrier.wait();
        let total = {
            let slots = s.slots.lock().expect("no rank panicked");
            let mut total = vec![0.0; slots[self.rank].len()];
            for slot in slots.iter() {
                total.iter_mut().zip(slot).for_each(|(t, v)| *t += v);
            }
            total
        };
        s.barrier.wait();
        total
    }

    /// `root`'s `values` on every rank.
    fn share(&self, values: Option<Vec<f64>>, root: usize) -> Vec<f64> {
        let s = &self.shared;
        if let Some(v) = values.filter(|_| self.rank == root) {
            s.slots.lock().expect("no rank panicked")[root] = v;
        }
        s.barrier.wait();
        let v = s.slots.lock().expect("no rank panicked")[root].clone();
        s.barrier.wait();
        v
    }
}

impl Collective for ThreadRanks {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.shared.size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        let total = self.sum(buf.iter().map(|&v| f64::from(v)));
        // Summed in f64, rounded to f32 once.
        buf.iter_mut().zip(total).for_each(|(b, t)| *b = t as f32);
        Ok(())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let total = self.sum(buf.iter().copied());
        buf.copy_from_slice(&total);
        Ok(())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        let v = self.share(Some(buf.iter().map(|&v| f64::from(v)).collect()), root);
        buf.iter_mut().zip(v).for_each(|(b, v)| *b = v as f32);
        Ok(())
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let s = &self.shared;
        if self.rank == root {
            *s.bytes.lock().expect("no rank panicked") = bytes.clone();
        }
        s.barrier.wait();
        if self.rank != root {
            *bytes = s.bytes.lock().expect("no rank panicked").clone();
        }
        s.barrier.wait();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        std::process::exit(code)
    }
}
