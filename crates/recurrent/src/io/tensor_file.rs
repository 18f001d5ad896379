//! Reading and writing safetensors files of f32 tensors (with dtype conversion on read).

use crate::error::{Error, Result};
use ndarray::{ArrayD, IxDyn};
use safetensors::{Dtype, SafeTensors};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// A tensor as `(name, shape, row-major values)`.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// A safetensors file read into memory.
#[derive(Debug, Clone)]
pub struct TensorFile {
    path: String,
    tensors: Vec<(String, Dtype, Vec<usize>, Vec<u8>)>,
    /// Position of each tensor in `tensors`, by name.
    index: HashMap<String, usize>,
    metadata: HashMap<String, String>,
}

impl TensorFile {
    /// Reads and validates a safetensors file.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let shown = path.display().to_string();
        Self::from_bytes(&super::read_bounded(path)?, &shown)
    }

    /// Parses safetensors bytes; `name` is used in errors.
    pub fn from_bytes(bytes: &[u8], name: &str) -> Result<Self> {
        let bad = |e: safetensors::SafeTensorError| Error::File {
            path: name.to_string(),
            message: format!("not a valid safetensors file ({e})"),
        };
        let st = SafeTensors::deserialize(bytes).map_err(bad)?;
        let (_, meta) = SafeTensors::read_metadata(bytes).map_err(bad)?;
        let tensors: Vec<_> = st
            .tensors()
            .into_iter()
            .map(|(n, v)| (n, v.dtype(), v.shape().to_vec(), v.data().to_vec()))
            .collect();
        let index = tensors
            .iter()
            .enumerate()
            .map(|(i, (n, ..))| (n.clone(), i))
            .collect();
        Ok(TensorFile {
            path: name.to_string(),
            tensors,
            index,
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

    /// Every `__metadata__` entry, as `(key, value)` (in no particular order).
    pub fn metadata_entries(&self) -> impl Iterator<Item = (&str, &str)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Names of all tensors.
    pub fn names(&self) -> Vec<&str> {
        self.tensors.iter().map(|(n, ..)| n.as_str()).collect()
    }

    /// Whether a tensor exists.
    pub fn contains(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Total number of elements over all tensors (bounded by the file's size).
    pub fn element_count(&self) -> usize {
        self.tensors
            .iter()
            .map(|(_, _, shape, _)| {
                shape
                    .iter()
                    .try_fold(1usize, |a, &d| a.checked_mul(d))
                    .unwrap_or(usize::MAX)
            })
            .fold(0usize, usize::saturating_add)
    }

    /// The shape of a tensor, if present.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.find(name).map(|(_, _, shape, _)| shape.as_slice())
    }

    fn find(&self, name: &str) -> Option<&(String, Dtype, Vec<usize>, Vec<u8>)> {
        self.index.get(name).map(|&i| &self.tensors[i])
    }

    /// A floating-point tensor as f32 (f64, f16 and bf16 are converted), if present.
    pub fn f32(&self, name: &str) -> Result<Option<ArrayD<f32>>> {
        let Some((_, dtype, shape, data)) = self.find(name) else {
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
        let Some((_, dtype, shape, data)) = self.find(name) else {
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
    let mut files = StagedFiles::new();
    files.stage(path, bytes)?;
    files.commit()
}

/// The temporary sibling a file is written to before it is renamed into place:
/// `.NAME.PID-N.tmp` in the same folder (`NAME` shortened to 200 bytes, so the temporary
/// name is legal whenever the final one is). Each call gives a new name.
pub fn temporary_sibling(path: &Path) -> Result<PathBuf> {
    static COUNTER: AtomicUsize = AtomicUsize::new(0);
    let file_name = path
        .file_name()
        .ok_or_else(|| Error::File {
            path: path.display().to_string(),
            message: "not a file path".into(),
        })?
        .to_string_lossy();
    let mut end = file_name.len().min(200);
    while !file_name.is_char_boundary(end) {
        end -= 1;
    }
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let tmp = format!(".{}.{}-{n}.tmp", &file_name[..end], std::process::id());
    Ok(match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.join(tmp),
        _ => PathBuf::from(tmp),
    })
}

/// Files written together: each is staged as a complete temporary sibling, and
/// [`StagedFiles::commit`] renames them all into place, so an error before the commit
/// (or a killed process) replaces none of the previous files. Staged files that are not
/// committed are removed when this is dropped.
#[derive(Debug, Default)]
pub struct StagedFiles {
    /// `(temporary, final)` paths.
    staged: Vec<(PathBuf, PathBuf)>,
}

impl StagedFiles {
    /// Nothing staged.
    pub fn new() -> Self {
        Self::default()
    }

    /// Writes `bytes` to a temporary sibling of `path` and syncs it to disk.
    pub fn stage(&mut self, path: &Path, bytes: &[u8]) -> Result<()> {
        let tmp = temporary_sibling(path)?;
        let result = (|| {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = result {
            let _ = std::fs::remove_file(&tmp);
            return Err(Error::io(path, "write", e));
        }
        self.staged.push((tmp, path.to_path_buf()));
        Ok(())
    }

    /// Renames every staged file into place, in the order staged.
    pub fn commit(mut self) -> Result<()> {
        for (tmp, path) in std::mem::take(&mut self.staged) {
            if let Err(e) = std::fs::rename(&tmp, &path) {
                let _ = std::fs::remove_file(&tmp);
                return Err(Error::io(&path, "write", e));
            }
        }
        Ok(())
    }
}

impl Drop for StagedFiles {
    fn drop(&mut self) {
        for (tmp, _) in &self.staged {
            let _ = std::fs::remove_file(tmp);
        }
    }
}
