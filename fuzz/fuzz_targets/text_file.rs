//! Any bytes as a training text: UTF-8 decoding, the vocabulary, encoding and the
//! validation split `train lm` makes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recurrent::data::{split_validation, Vocabulary};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let vocab = Vocabulary::from_text(text);
    let ids = vocab.encode(text).expect("every character of the text is in its vocabulary");
    let checked = Vocabulary::checked(vocab.chars().to_vec());
    assert!(checked.is_ok() || vocab.is_empty());
    let val_len = (ids.len() / 20).max(usize::from(!ids.is_empty()));
    let (train, val) = split_validation(&ids, val_len, 20);
    assert_eq!(train.len() + val.len(), ids.len());
});
