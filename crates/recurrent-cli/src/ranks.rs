//! `mpirun -np N recurrent train ...`: the ranks of an MPI job (cargo feature `mpi`). Rank 0
//! prints and writes; the other ranks compute their share of every batch silently.

#[cfg(feature = "mpi")]
use recurrent::distributed::Collective;
use recurrent::distributed::{self, launcher_world_size};
use recurrent::{Error, Result};

/// The job this process belongs to; MPI is finalised when it is dropped.
pub struct Job {
    #[cfg(feature = "mpi")]
    _session: Option<distributed::MpiSession>,
}

/// Joins the MPI job when `mpirun` started this process (several ranks): installs the
/// collective that training uses, sends the output of every rank but 0 to `/dev/null`
/// (errors still reach stderr), and makes a panic end the whole job.
#[cfg(feature = "mpi")]
pub fn join() -> Result<Job> {
    if !matches!(launcher_world_size(), Some(n) if n > 1) {
        return Ok(Job { _session: None });
    }
    let (mpi, session) = distributed::Mpi::init()?;
    if mpi.rank() != 0 {
        silence_stdout()?;
    }
    distributed::install(Box::new(mpi));
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        hook(info);
        distributed::current().abort(101);
    }));
    Ok(Job {
        _session: Some(session),
    })
}

/// Without MPI support a job of several ranks would train as many separate models into
/// the same files: refuse it.
#[cfg(not(feature = "mpi"))]
pub fn join() -> Result<Job> {
    match launcher_world_size() {
        Some(n) if n > 1 => Err(Error::Invalid(format!(
            "started as one of {n} MPI ranks, but this build has no MPI support \
             (build with `cargo build --release --features mpi`)"
        ))),
        _ => Ok(Job {}),
    }
}

#[cfg(feature = "mpi")]
fn silence_stdout() -> Result<()> {
    use std::os::fd::AsRawFd;
    let null = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/null")
        .map_err(|e| Error::Invalid(format!("/dev/null: {e}")))?;
    // SAFETY: dup2 on two open descriptors; stdout is replaced, `null` closed on drop.
    if unsafe { libc::dup2(null.as_raw_fd(), libc::STDOUT_FILENO) } < 0 {
        return Err(Error::Invalid(format!(
            "cannot silence the output of rank {}: {}",
            distributed::current().rank(),
            std::io::Error::last_os_error()
        )));
    }
    Ok(())
}

/// Whether this process writes the run's files and prints its results (rank 0, or the
/// only process).
pub fn is_root() -> bool {
    distributed::current().rank() == 0
}

/// Reports an error of this rank and, in a job of several ranks, ends all of them (the
/// others would wait for this one forever); returns the exit status otherwise.
pub fn fail(e: &Error) -> std::process::ExitCode {
    let c = distributed::current();
    if c.size() > 1 {
        eprintln!("error: rank {} of {}: {e}", c.rank(), c.size());
        c.abort(1);
    }
    eprintln!("error: {e}");
    std::process::ExitCode::FAILURE
}

/// Default worker threads of a rank: this machine's cores shared by the job's ranks on it.
pub fn default_threads() -> Option<usize> {
    let local = ["OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"]
        .iter()
        .find_map(|v| std::env::var(v).ok()?.parse::<usize>().ok())?;
    let cores = std::thread::available_parallelism().ok()?.get();
    Some((cores / local.max(1)).max(1))
}
