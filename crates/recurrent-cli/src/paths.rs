//! Checks of the files a command reads and writes, made before any work: every output
//! can be written where it is named, and no output names an input or another output.

use recurrent::{Error, Result};
use std::path::{Path, PathBuf};

/// The longest file name the usual file systems accept, in bytes.
const NAME_MAX: usize = 255;

/// A path named by a flag (`--out`, `--train`, ...).
pub type Named<'a> = (&'a str, &'a Path);

fn file_error(path: &Path, message: String) -> Error {
    Error::File {
        path: path.display().to_string(),
        message,
    }
}

/// The same file whatever the spelling: the canonical path when it exists, else the
/// canonical folder joined with the name.
fn identity(path: &Path) -> PathBuf {
    if let Ok(p) = path.canonicalize() {
        return p;
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let dir = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    path.file_name().map_or(dir.clone(), |n| dir.join(n))
}

/// Whether two paths name the same file: the same device and inode when both exist
/// (hard links and symbolic links included), else the same [`identity`].
fn same_file(a: &Path, b: &Path) -> bool {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        if let (Ok(x), Ok(y)) = (std::fs::metadata(a), std::fs::metadata(b)) {
            return x.dev() == y.dev() && x.ino() == y.ino();
        }
    }
    identity(a) == identity(b)
}

/// Fails unless a file can be written at `path` the way outputs are (a temporary sibling,
/// then a rename): `path` is not a folder, its folder exists and accepts a new file, and
/// its name is not too long.
pub fn check_writable(flag: &str, path: &Path) -> Result<()> {
    if path.is_dir() {
        return Err(file_error(
            path,
            format!("is a folder; {flag} needs a file path"),
        ));
    }
    let name = path
        .file_name()
        .ok_or_else(|| file_error(path, format!("{flag} needs a file path")))?;
    if name.len() > NAME_MAX {
        return Err(file_error(
            path,
            format!(
                "the file name is {} bytes long, at most {NAME_MAX} are allowed",
                name.len()
            ),
        ));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            return Err(file_error(
                path,
                format!("folder {} does not exist", dir.display()),
            ));
        }
    }
    let probe = recurrent::io::temporary_sibling(path)?;
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&probe)
        .map_err(|e| file_error(path, format!("cannot write here: {e}")))?;
    let _ = std::fs::remove_file(&probe);
    Ok(())
}

/// Checks every output with [`check_writable`], and that no output is the same file as
/// an input or as another output.
pub fn check_files(inputs: &[Named], outputs: &[Named]) -> Result<()> {
    for &(flag, path) in outputs {
        check_writable(flag, path)?;
    }
    for (i, &(flag, path)) in outputs.iter().enumerate() {
        if let Some((other, _)) = outputs[..i].iter().find(|(_, p)| same_file(p, path)) {
            return Err(file_error(
                path,
                format!("{flag} and {other} name the same file"),
            ));
        }
        if let Some((input_flag, _)) = inputs.iter().find(|(_, p)| same_file(p, path)) {
            return Err(file_error(
                path,
                format!("{flag} would overwrite the input given as {input_flag}"),
            ));
        }
    }
    Ok(())
}

/// Fails unless `path` names an existing file (not a folder).
pub fn check_input(flag: &str, path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_dir() => Err(file_error(
            path,
            format!("is a folder; {flag} needs a file"),
        )),
        Ok(_) => Ok(()),
        Err(e) => Err(file_error(path, format!("cannot read {flag}: {e}"))),
    }
}
