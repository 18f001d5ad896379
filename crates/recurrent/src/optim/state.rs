//! [`OptimizerState`]: what a checkpoint stores about an optimizer.

use crate::error::{Error, Result};
use std::collections::BTreeMap;

/// Optimizer kind, hyper-parameters and per-parameter buffers.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerState {
    /// PyTorch class name (`"Adam"`, `"SGD"`, ...).
    pub kind: String,
    /// Hyper-parameters under PyTorch's argument names, including the current `lr`.
    pub hyper: serde_json::Value,
    /// Buffers keyed `"{param}.{buffer}"` (e.g. `"fc.weight.exp_avg"`).
    pub buffers: BTreeMap<String, Vec<f32>>,
    /// Step counts per parameter.
    pub steps: BTreeMap<String, u64>,
}

impl OptimizerState {
    /// Checks that the state belongs to an optimizer of kind `kind`.
    pub fn expect_kind(&self, kind: &str) -> Result<()> {
        if self.kind != kind {
            return Err(Error::Config(format!(
                "optimizer state is for {}, cannot load it into {kind}",
                self.kind
            )));
        }
        Ok(())
    }

    /// Reads a float hyper-parameter.
    pub fn hyper_f64(&self, key: &str) -> Result<f64> {
        self.hyper[key]
            .as_f64()
            .ok_or_else(|| Error::Config(format!("optimizer state lacks `{key}`")))
    }

    /// Writes the state into a tensor writer (`optim.<key>` tensors plus metadata).
    pub fn write_into(&self, w: &mut crate::io::TensorWriter) {
        for (k, v) in &self.buffers {
            w.add(&format!("optim.{k}"), &[v.len()], v);
        }
        let meta = serde_json::json!({"kind": self.kind, "hyper": self.hyper, "steps": self.steps});
        w.metadata("optimizer", &meta.to_string());
    }

    /// Reads a state written by [`OptimizerState::write_into`].
    pub fn read_from(file: &crate::io::TensorFile) -> Result<Self> {
        let meta = file.metadata("optimizer").ok_or_else(|| Error::Missing {
            name: "optimizer metadata".into(),
            place: file.path().to_string(),
        })?;
        let meta: serde_json::Value = serde_json::from_str(meta)
            .map_err(|e| Error::Config(format!("optimizer metadata: {e}")))?;
        let steps = serde_json::from_value(meta["steps"].clone())
            .map_err(|e| Error::Config(format!("optimizer steps: {e}")))?;
        let mut buffers = BTreeMap::new();
        for name in file.names() {
            if let Some(k) = name.strip_prefix("optim.") {
                let a = file.require_f32(name)?;
                buffers.insert(k.to_string(), a.iter().copied().collect());
            }
        }
        Ok(OptimizerState {
            kind: meta["kind"].as_str().unwrap_or_default().to_string(),
            hyper: meta["hyper"].clone(),
            buffers,
            steps,
        })
    }
}
