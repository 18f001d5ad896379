//! Rounds of chunked work shared by the threads of the rayon pool, for time loops.
//!
//! A time step is one *round*; its work is split into *chunks* (ranges of hidden units)
//! that depend on everything the previous round wrote but not on each other. The calling
//! thread and up to `threads - 1` helpers claim chunks from one atomic word and wait for
//! the round's last chunk before the next round opens: one synchronisation per step, no
//! task spawned inside the loop. The caller claims chunks from the front and helpers from
//! the back, so each thread tends to keep the same chunks (and their weights in its own
//! cache) from step to step.
//!
//! No thread ever waits for another to *arrive*: if the pool is busy and no helper
//! starts, the caller does every chunk itself. So a team inside a parallel region (both
//! directions of a layer at once) cannot deadlock; it only runs with fewer threads.
//!
//! On a busy machine a helper can be descheduled holding a chunk, and the round waits for
//! it for a whole time slice; or it shares the caller's core and takes the caller's time
//! by spinning. So waiting is bounded: waiting threads spin for [`SPIN`], then yield their
//! core between checks, a helper that finds no chunk for [`GIVE_UP`] leaves, and the
//! caller measures its rounds: once it
//! has waited for others longer than it worked itself (the team is then slower than one
//! thread would be), it closes the board, runs the remaining rounds alone, and so do the
//! teams of the next few milliseconds, longer while it keeps happening ([`SOLO_PERIOD_MAX`]).

use std::cell::UnsafeCell;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// How long a waiting thread spins before it starts yielding its core: far longer than
/// a round's imbalance on an idle machine (microseconds), far shorter than a time slice.
const SPIN: Duration = Duration::from_micros(50);

/// Rounds the caller measures before it may leave the team.
const PROBE_ROUNDS: usize = 8;

/// Waiting that never makes the caller leave the team, however short its own work: less
/// than a time slice, so only a descheduled helper exceeds it.
const MIN_WAIT: Duration = Duration::from_micros(500);

/// The longest time teams stay single-threaded after finding their helpers slower than
/// working alone. After `k` such teams in a row the next `2^k` ms (up to this) run
/// single-threaded, so a lasting load costs a slow team about once a second, and a
/// single stall (a preempted virtual CPU) costs a few milliseconds of one thread.
const SOLO_PERIOD_MAX: Duration = Duration::from_secs(1);

/// Until when (milliseconds after [`epoch`]) teams run single-threaded.
static SOLO_UNTIL_MS: AtomicU64 = AtomicU64::new(0);

/// Teams in a row that left their helpers.
static STRIKES: AtomicU32 = AtomicU32::new(0);

fn epoch() -> Instant {
    static EPOCH: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    *EPOCH.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64
}

/// How long a helper waits for a chunk before it leaves the team: about a time slice,
/// so a caller that was preempted for a moment finds its helper still there.
const GIVE_UP: Duration = Duration::from_millis(2);

/// Waits until `ready()`: spins, then yields the core between checks once [`SPIN`] has
/// passed; returns false if `give_up` passes first. The clock is first read after 64
/// spins, so a wait that ends at once (the usual one, at every time step) costs none.
fn wait_until(ready: impl Fn() -> bool, give_up: Option<Duration>) -> bool {
    let mut start = None;
    let mut spins = 0u32;
    while !ready() {
        spins = spins.wrapping_add(1);
        if !spins.is_multiple_of(64) {
            std::hint::spin_loop();
            continue;
        }
        let waited = start.get_or_insert_with(Instant::now).elapsed();
        if give_up.is_some_and(|g| waited > g) {
            return false;
        }
        if waited > SPIN {
            std::thread::yield_now();
        }
    }
    true
}

thread_local! {
    static LIMIT: std::cell::Cell<usize> = const { std::cell::Cell::new(usize::MAX) };
}

/// Threads a team started on this thread may use: the pool's, or fewer inside
/// [`with_limit`].
pub fn team_threads() -> usize {
    rayon::current_num_threads().min(LIMIT.get())
}

/// Runs `f` with the teams it starts on this thread limited to `threads` threads: for
/// work that already runs beside other work, such as the two directions of a layer.
pub fn with_limit<T>(threads: usize, f: impl FnOnce() -> T) -> T {
    struct Restore(usize);
    impl Drop for Restore {
        fn drop(&mut self) {
            LIMIT.set(self.0);
        }
    }
    let _restore = Restore(LIMIT.replace(threads.max(1)));
    f()
}

/// Multiply-adds of a whole time loop below which it runs on the calling thread alone
/// (waking another thread costs more than it would save, e.g. one step at batch 1).
pub const PARALLEL_MIN_WORK: usize = 1 << 22;

/// Round number that tells helpers to leave.
const END: u64 = u32::MAX as u64;

/// `(round, first unclaimed chunk, one past the last unclaimed chunk)` in one word.
fn encode(round: u64, lo: usize, hi: usize) -> u64 {
    (round << 32) | ((lo as u64) << 16) | hi as u64
}

fn decode(s: u64) -> (u64, usize, usize) {
    (
        s >> 32,
        ((s >> 16) & 0xFFFF) as usize,
        (s & 0xFFFF) as usize,
    )
}

struct Board {
    state: AtomicU64,
    done: AtomicUsize,
}

impl Board {
    /// Claims a chunk of the open round from the front or the back.
    fn claim(&self, front: bool) -> Option<(usize, usize)> {
        let mut s = self.state.load(Ordering::Acquire);
        loop {
            let (round, lo, hi) = decode(s);
            if round == END || lo >= hi {
                return None;
            }
            let (next, chunk) = if front {
                (encode(round, lo + 1, hi), lo)
            } else {
                (encode(round, lo, hi - 1), hi - 1)
            };
            match self
                .state
                .compare_exchange_weak(s, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => return Some((round as usize, chunk)),
                Err(now) => s = now,
            }
        }
    }

    fn finish_chunk(&self) {
        self.done.fetch_add(1, Ordering::Release);
    }
}

/// Closes the board when the caller leaves, even by a panic, so helpers never spin on.
struct CloseOnDrop<'a>(&'a Board);

impl Drop for CloseOnDrop<'_> {
    fn drop(&mut self) {
        self.0.state.store(encode(END, 0, 0), Ordering::Release);
    }
}

/// Runs `work(round, chunk, scratch)` for every chunk `0..chunks` of every round
/// `0..rounds`; all of round `r` happens before any of round `r + 1`. Each participating
/// thread gets its own `S::default()` scratch. Uses at most [`team_threads`] threads,
/// and only the calling one unless `parallel` (for work too small to be worth waking
/// other threads).
pub fn run_rounds<S: Default>(
    rounds: usize,
    chunks: usize,
    parallel: bool,
    work: impl Fn(usize, usize, &mut S) + Sync,
) {
    assert!(
        chunks < 1 << 16 && (rounds as u64) < END,
        "team: too many chunks or rounds"
    );
    let solo = now_ms() < SOLO_UNTIL_MS.load(Ordering::Relaxed);
    let threads = if parallel && !solo { team_threads() } else { 1 };
    let helpers = threads.min(chunks).saturating_sub(1);
    if helpers == 0 || rounds == 0 {
        let mut scratch = S::default();
        for round in 0..rounds {
            for chunk in 0..chunks {
                work(round, chunk, &mut scratch);
            }
        }
        return;
    }
    let board = Board {
        state: AtomicU64::new(encode(0, 0, chunks)),
        done: AtomicUsize::new(0),
    };
    let (board, work) = (&board, &work);
    rayon::in_place_scope(|scope| {
        for _ in 0..helpers {
            scope.spawn(move |_| {
                let mut scratch = S::default();
                loop {
                    // A helper holding no chunk may leave at any time (the caller does
                    // what no helper claims): one that finds no work for [`GIVE_UP`] is
                    // not getting the core often enough to help, and leaves.
                    let open = wait_until(
                        || {
                            let (round, lo, hi) = decode(board.state.load(Ordering::Acquire));
                            round == END || lo < hi
                        },
                        Some(GIVE_UP),
                    );
                    if !open || decode(board.state.load(Ordering::Acquire)).0 == END {
                        break;
                    }
                    if let Some((round, chunk)) = board.claim(false) {
                        work(round, chunk, &mut scratch);
                        board.finish_chunk();
                    }
                }
            });
        }
        let _close = CloseOnDrop(board);
        let mut scratch = S::default();
        let (mut worked, mut waited) = (Duration::ZERO, Duration::ZERO);
        // Two clock reads per round: when the caller's own chunks are done, and when the
        // round is (which is also when the next one starts).
        let mut start = Instant::now();
        for round in 0..rounds {
            while let Some((r, chunk)) = board.claim(true) {
                debug_assert_eq!(r, round);
                work(round, chunk, &mut scratch);
                board.finish_chunk();
            }
            let own = Instant::now();
            wait_until(|| board.done.load(Ordering::Acquire) >= chunks, None);
            let end = Instant::now();
            worked += own - start;
            waited += end - own;
            start = end;
            board.done.store(0, Ordering::Relaxed);
            if round + 1 == rounds {
                STRIKES.store(0, Ordering::Relaxed);
                break;
            }
            if round + 1 >= PROBE_ROUNDS && waited > worked.max(MIN_WAIT) {
                // The helpers cost more than they give (a busy machine): every chunk of
                // this round is finished, so closing the board here lets them leave
                // without one in hand, and the caller runs the remaining rounds alone,
                // as do the teams of the next period (see [`SOLO_PERIOD_MAX`]).
                board.state.store(encode(END, 0, 0), Ordering::Release);
                let strikes = STRIKES.fetch_add(1, Ordering::Relaxed).saturating_add(1);
                let period = (1u64 << strikes.min(20)).min(SOLO_PERIOD_MAX.as_millis() as u64);
                SOLO_UNTIL_MS.store(now_ms() + period, Ordering::Relaxed);
                for round in round + 1..rounds {
                    for chunk in 0..chunks {
                        work(round, chunk, &mut scratch);
                    }
                }
                break;
            }
            board
                .state
                .store(encode(round as u64 + 1, 0, chunks), Ordering::Release);
        }
    });
}

/// A mutable buffer that the chunks of a round write through, each to its own disjoint
/// parts. Reads and writes go through [`Shared::slice`] / [`Shared::slice_mut`], whose
/// callers promise that no two threads touch overlapping ranges within one round.
pub struct Shared<'a> {
    data: &'a [UnsafeCell<f32>],
    _marker: PhantomData<&'a mut [f32]>,
}

// SAFETY: access is to disjoint ranges per thread within a round, and rounds are ordered
// by the board's acquire/release synchronisation.
unsafe impl Sync for Shared<'_> {}

impl<'a> Shared<'a> {
    /// Shares `data` for the duration of a team run.
    pub fn new(data: &'a mut [f32]) -> Self {
        let len = data.len();
        let ptr = data.as_mut_ptr() as *const UnsafeCell<f32>;
        // SAFETY: `UnsafeCell<f32>` has the layout of `f32`, and the exclusive borrow is
        // held for `'a`.
        let data = unsafe { std::slice::from_raw_parts(ptr, len) };
        Shared {
            data,
            _marker: PhantomData,
        }
    }

    /// Reads `start .. start + len`.
    ///
    /// # Safety
    /// No other thread may write this range during the current round.
    pub unsafe fn slice(&self, start: usize, len: usize) -> &[f32] {
        let cells = &self.data[start..start + len];
        std::slice::from_raw_parts(cells.as_ptr() as *const f32, len)
    }

    /// Writes `start .. start + len`.
    ///
    /// # Safety
    /// No other thread may read or write this range during the current round.
    #[allow(clippy::mut_from_ref)]
    pub unsafe fn slice_mut(&self, start: usize, len: usize) -> &mut [f32] {
        let cells = &self.data[start..start + len];
        std::slice::from_raw_parts_mut(UnsafeCell::raw_get(cells.as_ptr()), len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs `rounds` rounds of `chunks` chunks on a pool of `threads` threads, each round
    /// reading every value the previous round wrote (a running sum over chunks), with
    /// `before(on_caller)` run first in every chunk (`on_caller`: on the thread that runs
    /// the team), and checks the result: a chunk started before its round opened, or a
    /// round that ended early, shows up.
    fn check_running_sum(
        threads: usize,
        chunks: usize,
        rounds: usize,
        before: impl Fn(bool) + Sync,
    ) {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        pool.install(|| {
            let mut a = vec![1.0f32; chunks];
            let mut b = vec![0.0f32; chunks];
            let (sa, sb) = (Shared::new(&mut a), Shared::new(&mut b));
            let caller = std::thread::current().id();
            run_rounds::<()>(rounds, chunks, true, |round, chunk, _| {
                before(std::thread::current().id() == caller);
                let (src, dst) = if round % 2 == 0 {
                    (&sa, &sb)
                } else {
                    (&sb, &sa)
                };
                // SAFETY: the source is only read this round; each chunk writes its own
                // element of the destination.
                let total: f32 = unsafe { src.slice(0, chunks) }.iter().sum();
                unsafe { dst.slice_mut(chunk, 1)[0] = (total / chunks as f32).round() + 1.0 };
            });
            let last = if rounds.is_multiple_of(2) { &a } else { &b };
            assert!(last.iter().all(|&v| v == rounds as f32 + 1.0), "{last:?}");
        });
    }

    #[test]
    fn rounds_see_all_of_the_previous_round() {
        for threads in [1, 2, 3] {
            check_running_sum(threads, 7, 200, |_| {});
        }
    }

    /// A team whose helper stalls (as a preempted thread does) leaves it and finishes the
    /// rounds alone, still in order.
    #[test]
    fn a_stalling_team_finishes_alone_in_order() {
        let rounds = 100;
        let helper_chunks = AtomicUsize::new(0);
        check_running_sum(2, 2, rounds, |on_caller| {
            if on_caller {
                // Work long enough for the helper to claim the other chunk.
                let start = Instant::now();
                while start.elapsed() < Duration::from_micros(50) {
                    std::hint::spin_loop();
                }
            } else {
                helper_chunks.fetch_add(1, Ordering::Relaxed);
                // Far longer than the caller's own work: the caller leaves the team.
                std::thread::sleep(Duration::from_millis(1));
            }
        });
        // Without leaving, the helper would stall about every round; with it, the caller
        // leaves once the stalls outweigh its own work (after a few rounds, a dozen at
        // most however late the helper starts).
        let helped = helper_chunks.into_inner();
        assert!(helped <= rounds / 4, "the helper did {helped} chunks");
    }

    /// A team inside both halves of a `rayon::join` on a two-thread pool finishes.
    #[test]
    fn nested_teams_do_not_deadlock() {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(2)
            .build()
            .unwrap();
        let count = |n: &AtomicUsize| {
            run_rounds::<()>(50, 4, true, |_, _, _| {
                n.fetch_add(1, Ordering::Relaxed);
            })
        };
        let (x, y) = (AtomicUsize::new(0), AtomicUsize::new(0));
        pool.install(|| rayon::join(|| count(&x), || count(&y)));
        assert_eq!((x.into_inner(), y.into_inner()), (200, 200));
    }
}
