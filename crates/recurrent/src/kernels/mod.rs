//! Numeric kernels: matrix products and activation functions.
//!
//! All matrices are row-major `f32` slices with an explicit leading dimension.

pub mod activation;
pub mod cells;
pub mod cpu;
pub mod gemm;
pub mod packed;

pub use gemm::{gemm, Mat, MatMut};
pub use packed::{matmul_packed, PackedMatrix};
