//! UTF-8 text and its character vocabulary.

use super::data_error;
use crate::error::{Error, Result};
use std::path::Path;

/// Reads a UTF-8 text file; a file that is not UTF-8 is an error giving the byte offset.
pub fn read_text(path: impl AsRef<Path>) -> Result<String> {
    let path = path.as_ref();
    let shown = path.display().to_string();
    let bytes =
        std::fs::read(path).map_err(|e| data_error(&shown, 0, format!("cannot read: {e}")))?;
    String::from_utf8(bytes).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        data_error(
            &shown,
            0,
            format!("not UTF-8 text (invalid byte at offset {at})"),
        )
    })
}

/// The characters of a text, sorted, each with an index.
#[derive(Debug, Clone, PartialEq)]
pub struct Vocabulary {
    chars: Vec<char>,
}

impl Vocabulary {
    /// The distinct characters of `text`.
    pub fn from_text(text: &str) -> Self {
        let mut chars: Vec<char> = text.chars().collect();
        chars.sort_unstable();
        chars.dedup();
        Vocabulary { chars }
    }

    /// From an explicit character list (as stored in a model file).
    pub fn from_chars(chars: Vec<char>) -> Self {
        Vocabulary { chars }
    }

    /// The characters, by index.
    pub fn chars(&self) -> &[char] {
        &self.chars
    }

    /// Number of characters.
    pub fn len(&self) -> usize {
        self.chars.len()
    }

    /// Whether the vocabulary is empty.
    pub fn is_empty(&self) -> bool {
        self.chars.is_empty()
    }

    /// Index of a character.
    pub fn index(&self, c: char) -> Option<usize> {
        self.chars.binary_search(&c).ok()
    }

    /// Encodes a text; characters outside the vocabulary are an error.
    pub fn encode(&self, text: &str) -> Result<Vec<usize>> {
        text.chars()
            .map(|c| {
                self.index(c).ok_or_else(|| {
                    Error::Invalid(format!("character {c:?} is not in the model's vocabulary"))
                })
            })
            .collect()
    }
}
