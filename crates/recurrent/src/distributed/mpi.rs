//! [`Mpi`]: the collective operations over MPI's world communicator (feature `mpi`).

use super::Collective;
use crate::error::{Error, Result};
use mpi::collective::SystemOperation;
use mpi::environment::{Threading, Universe};
use mpi::topology::SimpleCommunicator;
use mpi::traits::{Communicator, CommunicatorCollectives, Equivalence, Root};

/// The ranks of an MPI job (`mpirun -np N ...`) over the world communicator. Operations may
/// come from any one thread at a time (`MPI_THREAD_SERIALIZED`), such as a thread of a
/// rayon pool.
pub struct Mpi {
    rank: usize,
    size: usize,
}

/// MPI stays initialised while this lives; dropping it finalises MPI (after the last
/// operation of every [`Mpi`]).
pub struct MpiSession {
    _universe: Universe,
}

impl Mpi {
    /// Initialises MPI (once per process).
    pub fn init() -> Result<(Self, MpiSession)> {
        let (universe, threading) = mpi::initialize_with_threading(Threading::Serialized)
            .ok_or_else(|| Error::Invalid("MPI was already initialised".into()))?;
        if threading < Threading::Serialized {
            return Err(Error::Invalid(format!(
                "the MPI library offers thread level {threading:?}; serialized calls from \
                 worker threads (MPI_THREAD_SERIALIZED) are needed"
            )));
        }
        let world = universe.world();
        let mpi = Mpi {
            rank: world.rank() as usize,
            size: world.size() as usize,
        };
        Ok((
            mpi,
            MpiSession {
                _universe: universe,
            },
        ))
    }

    fn world(&self) -> SimpleCommunicator {
        SimpleCommunicator::world()
    }

    /// `buf` replaced by its element-wise sum over the ranks, in pieces MPI can count.
    fn sum_in_place<T: Equivalence + Copy>(&self, buf: &mut [T]) {
        let world = self.world();
        for piece in buf.chunks_mut(MAX_COUNT) {
            let send = piece.to_vec();
            world.all_reduce_into(&send[..], piece, SystemOperation::sum());
        }
    }
}

/// MPI counts are `i32`: a buffer is sent in pieces of at most this many elements.
const MAX_COUNT: usize = 1 << 30;

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn size(&self) -> usize {
        self.size
    }

    fn all_reduce_sum(&self, buf: &mut [f32]) -> Result<()> {
        self.sum_in_place(buf);
        Ok(())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        self.sum_in_place(buf);
        Ok(())
    }

    fn broadcast(&self, buf: &mut [f32], root: usize) -> Result<()> {
        let world = self.world();
        let root = world.process_at_rank(root as i32);
        for piece in buf.chunks_mut(MAX_COUNT) {
            root.broadcast_into(piece);
        }
        Ok(())
    }

    fn broadcast_bytes(&self, bytes: &mut Vec<u8>, root: usize) -> Result<()> {
        let world = self.world();
        let root_process = world.process_at_rank(root as i32);
        let mut len = bytes.len() as u64;
        root_process.broadcast_into(&mut len);
        if self.rank != root {
            bytes.clear();
            bytes.resize(len as usize, 0);
        }
        for piece in bytes.chunks_mut(MAX_COUNT) {
            root_process.broadcast_into(piece);
        }
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world().abort(code)
    }
}
