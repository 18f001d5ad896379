//! Reading and writing safetensors files of f32 tensors (with dtype conversion on read).

use crate::error::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// A tensor as `(name, shape, row-major values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// A safetensors file read into memory.
#[derive(Debug, Clone)]
pub struct TensorFile {
    path: String,
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads and validates a safetensors file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| Error::File {
            path: shown.clone(),
            message: format!("cannot read: {e}"),
        })?;
        Self::from_bytes(&bytes, &shown)
    }

    /// Parses safetensors bytes; `name` is used in errors.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self> {
        let bad = |e: safetensors::SafeTensorError| Error::File {
            path: name.to_string(),
            message: format!("not a valid safetensors file ({e})"),
        };
        let st = SafeTensors::deserialize(bytes).map_err(bad)?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(bad)?;
        let tensors = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
            .collect();
        Ok(TensorFile {
            path: name.to_string(),
            tensors,
            metadata: meta.metadata().clone().unwrap_or_default(),
        })
    }

    /// The file's path as given.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// A `__metadata__` entry.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).map(String::as_str)
    }

    /// Names of all tensors.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.iter().map(|(n, ..)| n.as_str()).collect()
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.iter().any(|(n, ..)| n == name)
    }

    /// A floating-point tensor as f32 (f64, f16 and bf16 are converted), if present.
    pub fn f32(&self, name: &str) -> Result<Option<ArrayD<f32>>> {
        let Some((_, dtype, shape, data)) = self.tensors.iter().find(|(n, ..)| n == name) else {
            return Ok(None);
        };
        let values = to_f32(*dtype, data).ok_or_else(|| Error::File {
            path: self.path.clone(),
            message: format!(
                "tensor `{name}` has dtype {dtype:?}; expected a float type (F32, F64, F16, BF16)"
            ),
        })?;
        Ok(Some(
            ArrayD::from_shape_vec(IxDyn(shape), values).expect("safetensors checked the size"),
        ))
    }

    /// Like [`TensorFile::f32`] but a missing tensor is an error.
    pub fn require_f32(&self, name: &str) -> Result<ArrayD<f32>> {
        self.f32(name)?.ok_or_else(|| Error::Missing {
            name: name.to_string(),
            place: self.path.clone(),
        })
    }

    /// Every float tensor as `(name, shape, values)`.
    pub fn all_f32(&self) -> Result<Vec<NamedTensor>> {
        self.tensors
            .iter()
            .map(|(n, ..)| {
                let a = self.require_f32(n)?;
                Ok((n.clone(), a.shape().to_vec(), a.into_raw_vec_and_offset().0))
            })
            .collect()
    }

    /// An integer tensor of shape `(B,)` (I64, I32, U8..U64 accepted) as lengths, if present.
    pub fn lengths(&self, name: &str) -> Result<Option<Vec<usize>>> {
        let Some((_, dtype, shape, data)) = self.tensors.iter().find(|(n, ..)| n == name) else {
            return Ok(None);
        };
        if shape.len() != 1 {
            return Err(Error::shape(name, "(B,)", shape));
        }
        let ints: Vec<i64> = match dtype {
            Dtype::I64 => data
                .chunks_exact(8)
                .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
                .collect(),
            Dtype::I32 => data
                .chunks_exact(4)
                .map(|c| i32::from_le_bytes(c.try_into().unwrap()) as i64)
                .collect(),
            other => {
                return Err(Error::File {
                    path: self.path.clone(),
                    message: format!("tensor `{name}` has dtype {other:?}; expected I64 or I32"),
                })
            }
        };
        ints.iter()
            .map(|&v| {
                usize::try_from(v)
                    .map_err(|_| Error::Lengths(format!("`{name}` holds a negative length {v}")))
            })
            .collect::<Result<Vec<_>>>()
            .map(Some)
    }
}

fn to_f32(dtype: Dtype, data: &[u8]) -> Option<Vec<f32>> {
    Some(match dtype {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|c| f64::from_le_bytes(c.try_into().unwrap()) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32())
            .collect(),
        _ => return None,
    })
}

/// Collects tensors and metadata, then writes a safetensors file atomically.
#[derive(Debug, Default)]
pub struct TensorWriter {
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    metadata: HashMap<String, String>,
}

impl TensorWriter {
    /// An empty writer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an f32 tensor (`values` row-major, `shape.iter().product()` long).
    pub fn add(&mut self, name: &str, shape: &[usize], values: &[f32]) -> &mut Self {
        debug_assert_eq!(shape.iter().product::<usize>(), values.len());
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors
            .push((name.to_string(), Dtype::F32, shape.to_vec(), bytes));
        self
    }

    /// Adds an `ndarray` f32 tensor.
    pub fn add_array(&mut self, name: &str, a: &ArrayD<f32>) -> &mut Self {
        let std = a.as_standard_layout();
        self.add(name, a.shape(), std.as_slice().expect("standard layout"))
    }

    /// Adds an i64 tensor.
    pub fn add_i64(&mut self, name: &str, shape: &[usize], values: &[i64]) -> &mut Self {
        let bytes = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.tensors
            .push((name.to_string(), Dtype::I64, shape.to_vec(), bytes));
        self
    }

    /// Sets a `__metadata__` entry.
    pub fn metadata(&mut self, key: &str, value: &str) -> &mut Self {
        self.metadata.insert(key.to_string(), value.to_string());
        self
    }

    /// Serialises to bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let views = self
            .tensors
            .iter()
            .map(|(n, d, s, b)| {
                safetensors::tensor::TensorView::new(*d, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::Invalid(format!("tensor `{n}`: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta = (!self.metadata.is_empty()).then(|| self.metadata.clone());
        safetensors::tensor::serialize(views, &meta)
            .map_err(|e| Error::Invalid(format!("serialising: {e}")))
    }

    /// Writes the file atomically (temporary file in the same folder, then rename).
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        write_atomic(path.as_ref(), &self.to_bytes()?)
    }
}

/// Writes `bytes` to `path` through a temporary sibling file and a rename, so readers never
/// see a partial file and a failure leaves the previous file intact.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let err = |message: String| Error::File {
        path: path.display().to_string(),
        message,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => std::path::PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .ok_or_else(|| err("not a file path".into()))?
        .to_string_lossy();
    let tmp = dir.join(format!(".{file_name}.tmp{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(format!("cannot write: {e}")));
    }
    Ok(())
}
