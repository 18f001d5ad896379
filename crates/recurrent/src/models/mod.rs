//! Ready models for the tasks RNNs are used for, with their training loop:
//! sequence classification (N vs 1), forecasting, character-level language models, and
//! encoder-decoder models (N vs M).

pub mod baselines;
pub mod char_lm;
pub mod classifier;
mod data_parallel;
pub mod ensemble;
pub mod fcn;
pub mod fit;
pub mod forecaster;
pub mod seasonal_ets;
pub mod selection;
pub mod seq2seq;

pub use char_lm::{CharLm, CharLmMeta, LmState, LmTask};
pub use classifier::{
    Architecture, ClassificationTask, ClassifierEnsemble, ClassifierMeta, SequenceClassifier,
};
pub use ensemble::{fit_ensemble, member_checkpoint, member_settings, merge_reports};
pub use fit::{fit, fit_on, FitReport, FitSettings, Progress, Silent, StoppedBy, Trainable};
pub use forecaster::{
    detect_season, ForecastMeta, ForecastTask, Forecaster, ForecasterEnsemble, Transform,
};
pub use selection::{backtest, Backtest, ClassicForecasts, ForecastMethod, NETWORK_EVIDENCE};
pub use seq2seq::{Seq2Seq, Seq2SeqMeta, Seq2SeqTask};

use crate::config::RnnConfig;
use crate::error::{Error, Result};
use crate::io::{TensorFile, TensorWriter};
use crate::param::Parameters;
use crate::rnn::Rnn;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::path::Path;

/// A task model as stored in a model file: weights, the recurrent configuration
/// (`config`), the task name (`task`) and task metadata (`model`).
pub trait TaskModel: Parameters + Sized {
    /// The `task` metadata value.
    const TASK: &'static str;
    /// What the file stores besides weights and the recurrent configuration.
    type Meta: Serialize + DeserializeOwned + Clone;
    /// Checks that metadata read from a file agrees with the configuration (sizes that
    /// must match, lengths of per-step and per-column lists), so that a model built from
    /// them allocates no more than the file's tensors hold.
    fn check_meta(config: &RnnConfig, meta: &Self::Meta) -> Result<()>;
    /// Parameter values outside the recurrent stack (embedding, output layer) of a model
    /// built from checked metadata; `None` when the count overflows.
    fn other_parameters(config: &RnnConfig, meta: &Self::Meta) -> Option<usize>;
    /// A model with this configuration and metadata (weights to be loaded).
    fn build(config: RnnConfig, meta: Self::Meta) -> Result<Self>;
    /// The recurrent stack.
    fn rnn(&self) -> &Rnn;
    /// The recurrent stack, mutable.
    fn rnn_mut(&mut self) -> &mut Rnn;
    /// The task metadata.
    fn meta(&self) -> &Self::Meta;
}

/// The `task`, `config` and `model` metadata entries of a model.
pub(crate) fn metadata_entries<M: TaskModel>(m: &M) -> Vec<(String, String)> {
    vec![
        ("task".into(), M::TASK.into()),
        ("config".into(), m.rnn().config().to_json()),
        (
            "model".into(),
            serde_json::to_string(m.meta()).expect("serialisable"),
        ),
    ]
}

/// Models of one kind trained from consecutive seeds and used together.
#[derive(Debug, Clone)]
pub struct Ensemble<M> {
    /// The members (same configuration and metadata).
    pub members: Vec<M>,
}

/// Parameter-name prefix of member `k` of `count` (none for a single model).
fn member_prefix(k: usize, count: usize) -> String {
    if count == 1 {
        String::new()
    } else {
        format!("member{k}.")
    }
}

impl<M: TaskModel> Ensemble<M> {
    /// Shared metadata.
    pub fn meta(&self) -> &M::Meta {
        self.members[0].meta()
    }

    /// Saves every member (parameters prefixed `member{k}.` when there are several),
    /// the configuration and the metadata in one safetensors file, atomically.
    pub fn save(&self, path: impl AsRef<Path>) -> Result<()> {
        crate::io::write_atomic(path.as_ref(), &self.to_bytes()?)
    }

    /// The bytes [`Ensemble::save`] writes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let count = self.members.len();
        let mut w = TensorWriter::new();
        for (k, m) in self.members.iter().enumerate() {
            let prefix = member_prefix(k, count);
            m.visit_state(&mut |name, shape, value| {
                w.add(&format!("{prefix}{name}"), shape, value);
            });
        }
        for (k, v) in metadata_entries(&self.members[0]) {
            w.metadata(&k, &v);
        }
        w.metadata("members", &count.to_string());
        w.to_bytes()
    }

    /// Loads a file written by [`Ensemble::save`]; members are in inference mode.
    pub fn load(path: impl AsRef<Path>) -> Result<Self> {
        Self::from_file(&TensorFile::read(path.as_ref())?)
    }

    /// An ensemble from a model file already read (see [`TensorFile::from_bytes`]): the
    /// metadata is checked against the configuration and the tensors' total size before
    /// any member is built.
    pub fn from_file(file: &TensorFile) -> Result<Self> {
        let shown = file.path().to_string();
        let (config, meta): (RnnConfig, M::Meta) = read_meta(file, M::TASK, &shown)?;
        let bad = |message: String| Error::File {
            path: shown.clone(),
            message,
        };
        M::check_meta(&config, &meta).map_err(|e| bad(format!("`model` metadata: {e}")))?;
        let count: usize = match file.metadata("members") {
            None => 1,
            Some(m) => m
                .parse()
                .ok()
                .filter(|&n| n >= 1 && n <= file.names().len())
                .ok_or_else(|| {
                    bad(format!(
                        "`members` metadata must be a count from 1 to the number of tensors ({}), found {m:?}",
                        file.names().len()
                    ))
                })?,
        };
        // Each member must be stored in full, so no size in the metadata can ask for more
        // memory than the file's tensors hold.
        let per_member = M::other_parameters(&config, &meta)
            .and_then(|n| n.checked_add(config.parameter_count().ok()?));
        if !matches!(per_member.and_then(|n| n.checked_mul(count)), Some(n) if n <= file.element_count())
        {
            return Err(bad(format!(
                "the configuration and metadata declare {} parameters for each of {count} members, but the file holds {} values",
                per_member.map_or("more".to_string(), |n| n.to_string()),
                file.element_count()
            )));
        }
        let mut members = Vec::with_capacity(count);
        for k in 0..count {
            let mut m = M::build(config.clone(), meta.clone())?;
            load_params(&mut m, file, &member_prefix(k, count))?;
            m.rnn_mut().eval();
            members.push(m);
        }
        Ok(Ensemble { members })
    }
}

/// Reads and checks the `task`, `config` and `model` metadata of a task model file.
pub(crate) fn read_meta<M: DeserializeOwned>(
    file: &TensorFile,
    task: &str,
    shown: &str,
) -> Result<(RnnConfig, M)> {
    let err = |m: String| Error::File {
        path: shown.to_string(),
        message: m,
    };
    match file.metadata("task") {
        Some(t) if t == task => {}
        Some(t) => {
            return Err(err(format!(
                "this is a `{t}` model, expected a `{task}` model"
            )))
        }
        None => return Err(err("not a task model file (no `task` metadata)".into())),
    }
    let config = RnnConfig::from_json(
        file.metadata("config")
            .ok_or_else(|| err("no `config` metadata".into()))?,
    )?;
    let meta = serde_json::from_str(
        file.metadata("model")
            .ok_or_else(|| err("no `model` metadata".into()))?,
    )
    .map_err(|e| err(format!("`model` metadata: {e}")))?;
    Ok((config, meta))
}

/// Loads every parameter and buffer of `model` from `file`, stored under `prefix` + name.
pub(crate) fn load_params(
    model: &mut dyn Parameters,
    file: &TensorFile,
    prefix: &str,
) -> Result<()> {
    let mut result = Ok(());
    model.visit_state_mut(&mut |name, shape, value| {
        if result.is_ok() {
            result = load_tensor(file, &format!("{prefix}{name}"), name, shape, value);
        }
    });
    result
}

/// Reads tensor `stored` of `file` into `value`, which has `shape`; `name` is used in errors.
fn load_tensor(
    file: &TensorFile,
    stored: &str,
    name: &str,
    shape: &[usize],
    value: &mut [f32],
) -> Result<()> {
    let v = file.require_f32(stored)?;
    if v.shape() != shape {
        return Err(Error::shape(name, format!("{shape:?}"), v.shape()));
    }
    value.copy_from_slice(v.as_slice().expect("standard layout"));
    crate::error::check_finite(name, value)
}
