//! Any text as a table of sequence pairs (TSV or CSV with a header), then as the
//! vocabularies `train seq2seq` builds from it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recurrent::data::{parse_pairs, PairColumns};
use recurrent::models::seq2seq::{Tokens, Vocab};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let columns = PairColumns { sources_only: data.len() % 2 == 0, ..Default::default() };
    if let Ok(p) = parse_pairs(text, "fuzz", &columns) {
        for tokens in [Tokens::Chars, Tokens::Words] {
            let v = Vocab::build(tokens, p.pairs.iter().map(|(s, _)| s.as_str()));
            let (ids, _) = v.encode_all(p.pairs.iter().map(|(_, t)| t.as_str()));
            let _ = ids.iter().map(|i| v.decode(i)).count();
        }
    }
});
