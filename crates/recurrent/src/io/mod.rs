//! Files: safetensors tensors with PyTorch's names, model files with their config, atomic writes.

mod tensor_file;

pub use tensor_file::{write_atomic, NamedTensor, TensorFile, TensorWriter};

use crate::config::RnnConfig;
use crate::error::{Error, Result};
use crate::param::Parameters;
use crate::rnn::Rnn;
use std::path::Path;

/// Metadata key holding the model configuration JSON.
pub const CONFIG_KEY: &str = "config";

/// Loads a model file: `state_dict()` tensors plus `__metadata__["config"]`.
///
/// Weights stored as f64, f16 or bf16 are converted to f32.
pub fn load_rnn(path: impl AsRef<Path>) -> Result<Rnn> {
    let path = path.as_ref();
    let file = TensorFile::read(path)?;
    let config_json = file.metadata(CONFIG_KEY).ok_or_else(|| Error::File {
        path: path.display().to_string(),
        message: "no `config` entry in the safetensors metadata (expected the model's JSON configuration)".into(),
    })?;
    let config = RnnConfig::from_json(config_json).map_err(|e| Error::File {
        path: path.display().to_string(),
        message: e.to_string(),
    })?;
    let mut rnn = Rnn::new(
        config,
        &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0),
    )?;
    let tensors = file.all_f32()?;
    rnn.load_tensors(&tensors, &path.display().to_string())?;
    rnn.eval();
    Ok(rnn)
}

/// Saves a model as safetensors (f32, `state_dict()` names, config in the metadata),
/// atomically: a failed write leaves any previous file untouched.
pub fn save_rnn(rnn: &Rnn, path: impl AsRef<Path>) -> Result<()> {
    let mut w = TensorWriter::new();
    for (name, p) in rnn.named_parameters() {
        w.add(&name, &p.shape, &p.value);
    }
    w.metadata(CONFIG_KEY, &rnn.config().to_json());
    w.write(path)
}
