//! Any bytes as a model or checkpoint file: the safetensors container, the `config`,
//! `task`, `model`, `members` and `optimizer` metadata, and every task model's loader.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recurrent::io::{rnn_from_file, TensorFile};
use recurrent::models::{CharLm, ClassifierEnsemble, Ensemble, ForecasterEnsemble, Seq2Seq};
use recurrent::optim::OptimizerState;

fuzz_target!(|data: &[u8]| {
    let Ok(file) = TensorFile::from_bytes(data, "fuzz") else {
        return;
    };
    let _ = file.all_f32();
    let _ = file.lengths("lengths");
    let _ = rnn_from_file(&file);
    let _ = ClassifierEnsemble::from_file(&file);
    let _ = ForecasterEnsemble::from_file(&file);
    let _ = Ensemble::<CharLm>::from_file(&file);
    if let Ok(m) = Ensemble::<Seq2Seq>::from_file(&file) {
        // Decoding is bounded by the checked `max_target_len`.
        let _ = m.members[0].decode(&[vec![0, 3]], 2);
    }
    let _ = OptimizerState::read_from(&file);
});
