//! Ready models for the tasks RNNs are used for, with their training loop:
//! sequence classification (N vs 1), forecasting, and character-level language models.

pub mod char_lm;
pub mod classifier;
pub mod fit;
pub mod forecaster;

pub use char_lm::{CharLm, CharLmMeta, LmState, LmTask};
pub use classifier::{ClassificationTask, ClassifierEnsemble, ClassifierMeta, SequenceClassifier};
pub use fit::{fit, FitReport, FitSettings, Progress, Silent, Trainable};
pub use forecaster::{
    detect_season, ForecastMeta, ForecastTask, Forecaster, ForecasterEnsemble, Transform,
};

use crate::config::RnnConfig;
use crate::error::{Error, Result};
use crate::io::TensorFile;
use crate::param::Parameters;
use serde::de::DeserializeOwned;

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

/// Loads every named parameter of `model` from `file`, stored under `prefix` + name.
pub(crate) fn load_params(
    model: &mut dyn Parameters,
    file: &TensorFile,
    prefix: &str,
) -> Result<()> {
    for (name, p) in model.named_parameters_mut() {
        let v = file.require_f32(&format!("{prefix}{name}"))?;
        p.assign(&name, v.shape(), v.as_slice().expect("standard layout"))?;
        crate::error::check_finite(&name, &p.value)?;
    }
    Ok(())
}
