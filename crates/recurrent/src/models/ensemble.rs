//! Training an [`Ensemble`]: members from consecutive seeds, each with its own checkpoint
//! and an equal share of the time budget, fitted one after another.

use super::fit::{fit, FitReport, FitSettings, Progress, Trainable};
use super::{Ensemble, TaskModel};
use crate::error::Result;
use std::path::{Path, PathBuf};

/// Checkpoint of ensemble member `k` for the checkpoint path `base`: `BASE.m{k}`.
pub fn member_checkpoint(base: &Path, k: usize) -> PathBuf {
    let mut s = base.as_os_str().to_owned();
    s.push(format!(".m{k}"));
    PathBuf::from(s)
}

/// Settings of ensemble member `k` of `members`: seed `seed + k`, its own checkpoint
/// (resumed only if the stopped run reached it), an equal share of the time budget.
pub fn member_settings(settings: &FitSettings, k: usize, members: usize) -> FitSettings {
    let mut s = settings.clone();
    s.seed = settings.seed.wrapping_add(k as u64);
    s.checkpoint = settings
        .checkpoint
        .as_ref()
        .map(|p| member_checkpoint(p, k));
    s.resume = settings.resume && s.checkpoint.as_ref().is_some_and(|p| p.exists());
    s.time_budget = settings.time_budget.map(|t| t.div_f64(members as f64));
    s
}

/// One report for an ensemble: the first member's curves, the members' summed times and
/// their overall rate.
pub fn merge_reports(reports: &[FitReport]) -> FitReport {
    let mut r = reports[0].clone();
    r.seconds = reports.iter().map(|x| x.seconds).sum();
    r.communication_seconds = reports.iter().map(|x| x.communication_seconds).sum();
    let examples: f64 = reports
        .iter()
        .map(|x| x.examples_per_second * x.seconds)
        .sum();
    r.examples_per_second = examples / r.seconds.max(1e-9);
    r
}

/// Trains an ensemble of `members` (at least 1) with [`fit`]: `task(k, seed)` builds
/// member `k`'s task (its model drawn from `seed`, which is `settings.seed + k`),
/// `progress(k)` reports on its training, and `model(task)` takes the trained model out.
/// Members are left in inference mode. Returns the ensemble and each member's report.
pub fn fit_ensemble<T: Trainable, M: TaskModel>(
    settings: &FitSettings,
    members: usize,
    mut task: impl FnMut(usize, u64) -> Result<T>,
    mut progress: impl FnMut(usize) -> Box<dyn Progress>,
    mut model: impl FnMut(T) -> M,
) -> Result<(Ensemble<M>, Vec<FitReport>)> {
    let mut ensemble = Ensemble {
        members: Vec::with_capacity(members),
    };
    let mut reports = Vec::with_capacity(members);
    for k in 0..members.max(1) {
        let s = member_settings(settings, k, members.max(1));
        let mut t = task(k, s.seed)?;
        reports.push(fit(&mut t, &s, &mut *progress(k))?);
        let mut m = model(t);
        m.rnn_mut().eval();
        ensemble.members.push(m);
    }
    Ok((ensemble, reports))
}
