//! Files: safetensors tensors with PyTorch's names, model files with their config, atomic writes.

mod read;
mod tensor_file;

pub use read::{read_bounded, read_utf8, MAX_STREAM_BYTES};
pub use tensor_file::{
    temporary_sibling, write_atomic, NamedTensor, StagedFiles, TensorFile, TensorWriter,
};

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
    rnn_from_file(&TensorFile::read(path.as_ref())?)
}

/// A model from a model file already read (see [`TensorFile::from_bytes`]): the
/// configuration is checked against the tensors' total size before anything is allocated.
pub fn rnn_from_file(file: &TensorFile) -> Result<Rnn> {
    let path = file.path();
    let config_json = file.metadata(CONFIG_KEY).ok_or_else(|| Error::File {
        path: path.to_string(),
        message: "no `config` entry in the safetensors metadata (expected the model's JSON configuration)".into(),
    })?;
    let config = RnnConfig::from_json(config_json).map_err(|e| Error::File {
        path: path.to_string(),
        message: e.to_string(),
    })?;
    // Every expected tensor is looked up with its shape before anything is allocated, so
    // sizes in the configuration cannot ask for more memory than the file's tensors hold.
    let layer_directions = config.num_layers.saturating_mul(config.num_directions());
    if layer_directions > file.names().len() {
        return Err(Error::File {
            path: path.to_string(),
            message: format!(
                "the configuration declares {} layers ({layer_directions} layer directions), but the file holds {} tensors",
                config.num_layers,
                file.names().len()
            ),
        });
    }
    for (name, shape) in config.parameter_shapes() {
        match file.shape(&name) {
            None => {
                return Err(Error::Missing {
                    name,
                    place: path.to_string(),
                })
            }
            Some(found) if found != shape.as_slice() => {
                return Err(Error::shape(name, format!("{shape:?}"), found))
            }
            Some(_) => {}
        }
    }
    let mut rnn = Rnn::new(
        config,
        &mut <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(0),
    )?;
    let tensors = file.all_f32()?;
    rnn.load_tensors(&tensors, path)?;
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
