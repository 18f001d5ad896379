//! UTF-8 text and its character vocabulary.

use crate::error::{Error, Result};
use std::path::Path;

/// Reads a UTF-8 text file; a file that is not UTF-8 is an error giving the byte offset.
pub fn read_text(path: impl AsRef<Path>) -> Result<String> {
    crate::io::read_utf8(path.as_ref())
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

    /// From a character list, sorted and with repeats removed.
    pub fn from_chars(mut chars: Vec<char>) -> Self {
        chars.sort_unstable();
        chars.dedup();
        Vocabulary { chars }
    }

    /// From a character list as stored in a model file: it must be non-empty, sorted and
    /// free of repeats (each character's index is its position).
    pub fn checked(chars: Vec<char>) -> Result<Self> {
        if chars.is_empty() {
            return Err(Error::Invalid("the vocabulary is empty".into()));
        }
        if let Some(w) = chars.windows(2).find(|w| w[0] >= w[1]) {
            return Err(Error::Invalid(format!(
                "the vocabulary is not in sorted order without repeats ({:?} before {:?})",
                w[0], w[1]
            )));
        }
        Ok(Vocabulary { chars })
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

/// Splits `text` (the training part of a text, as indices or characters) into training and
/// validation text.
///
/// The validation text is `blocks` pieces of `val_len / blocks` items, one from the middle of
/// each of `blocks` equal stretches of `text`; the rest, joined in order, is the training
/// text. So validation samples the whole text, and training reaches up to the end of `text`:
/// when a held-out part follows, the model has read what comes just before it (the opening
/// of a work that the held-out part continues, say). `blocks` is lowered so that each piece
/// has at least one item; with `val_len == 0` everything is training text.
///
/// Returns `(train, validation)`, with `train.len() + validation.len() == text.len()` and
/// `validation.len() == val_len` rounded down to a multiple of the number of pieces.
pub fn split_validation<T: Copy>(text: &[T], val_len: usize, blocks: usize) -> (Vec<T>, Vec<T>) {
    let val_len = val_len.min(text.len());
    let blocks = blocks.clamp(1, val_len.max(1));
    let piece = val_len / blocks;
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    let mut taken_to = 0;
    for k in 0..blocks {
        // Centred on the k-th stretch, but after the previous piece and leaving room for
        // this piece and the later ones.
        let centre = (2 * k + 1) * text.len() / (2 * blocks);
        let latest = text.len() - (blocks - k) * piece;
        let start = centre.saturating_sub(piece / 2).max(taken_to).min(latest);
        train.extend_from_slice(&text[taken_to..start]);
        validation.extend_from_slice(&text[start..start + piece]);
        taken_to = start + piece;
    }
    train.extend_from_slice(&text[taken_to..]);
    (train, validation)
}
