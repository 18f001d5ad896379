//! Bounded reading of untrusted files.

use crate::error::{Error, Result};
use std::io::Read;
use std::path::Path;

/// The most bytes read from a file whose size is not known in advance (a pipe, a device
/// such as `/dev/zero`, a FIFO): 256 MiB. Regular files are read up to their size.
pub const MAX_STREAM_BYTES: u64 = 1 << 28;

/// Reads a whole file, never more than its size on disk (regular files) or
/// [`MAX_STREAM_BYTES`] (anything else); a folder, or a stream longer than the limit, is
/// an error naming the file.
pub fn read_bounded(path: &Path) -> Result<Vec<u8>> {
    let err = |message: String| Error::File {
        path: path.display().to_string(),
        message,
    };
    let read_error = |e| Error::io(path, "read", e);
    let file = std::fs::File::open(path).map_err(read_error)?;
    let meta = file.metadata().map_err(read_error)?;
    if meta.is_dir() {
        return Err(err("is a folder, expected a file".into()));
    }
    let limit = if meta.is_file() {
        meta.len()
    } else {
        MAX_STREAM_BYTES
    };
    let mut bytes = Vec::with_capacity(limit.min(1 << 26) as usize);
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > limit {
        return Err(err(if meta.is_file() {
            "the file grew while it was read".into()
        } else {
            format!(
                "not a regular file, and it holds more than {} MiB",
                MAX_STREAM_BYTES >> 20
            )
        }));
    }
    Ok(bytes)
}

/// Reads a whole file as UTF-8 text (see [`read_bounded`]); invalid UTF-8 is an error
/// giving the byte offset.
pub fn read_utf8(path: &Path) -> Result<String> {
    String::from_utf8(read_bounded(path)?).map_err(|e| Error::File {
        path: path.display().to_string(),
        message: format!(
            "not UTF-8 text (invalid byte at offset {})",
            e.utf8_error().valid_up_to()
        ),
    })
}
