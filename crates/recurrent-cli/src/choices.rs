//! The fixed choices of the command line (`--mode`, `--precision`) as clap value enums,
//! spelled as the library and PyTorch spell them.

use clap::ValueEnum;
use recurrent::kernels::Precision;
use recurrent::models::Architecture;
use recurrent::Mode;

/// `--mode`: the cell type, as PyTorch's `mode` strings.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModeArg {
    /// Long short-term memory.
    #[value(name = "LSTM")]
    Lstm,
    /// Gated recurrent unit.
    #[value(name = "GRU")]
    Gru,
    /// Elman RNN with tanh.
    #[value(name = "RNN_TANH")]
    RnnTanh,
    /// Elman RNN with ReLU.
    #[value(name = "RNN_RELU")]
    RnnRelu,
}

impl From<ModeArg> for Mode {
    fn from(m: ModeArg) -> Mode {
        match m {
            ModeArg::Lstm => Mode::Lstm,
            ModeArg::Gru => Mode::Gru,
            ModeArg::RnnTanh => Mode::RnnTanh,
            ModeArg::RnnRelu => Mode::RnnRelu,
        }
    }
}

/// `--precision`: the arithmetic of training products.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrecisionArg {
    /// Single precision.
    F32,
    /// Operands rounded to bfloat16, sums in f32.
    Bf16,
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Precision {
        match p {
            PrecisionArg::F32 => Precision::F32,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

/// `train classify --model`: the classifier's network.
#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchitectureArg {
    /// The recurrent stack alone (mean and max pooled).
    Lstm,
    /// LSTM-FCN: the recurrent stack beside three convolution blocks.
    #[value(name = "lstm-fcn")]
    LstmFcn,
}

impl From<ArchitectureArg> for Architecture {
    fn from(a: ArchitectureArg) -> Architecture {
        match a {
            ArchitectureArg::Lstm => Architecture::Lstm,
            ArchitectureArg::LstmFcn => Architecture::LstmFcn,
        }
    }
}
