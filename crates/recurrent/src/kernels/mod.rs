//! Numeric kernels: matrix products and activation functions.
//!
//! All matrices are row-major `f32` slices with an explicit leading dimension.

pub mod activation;
#[cfg(target_arch = "x86_64")]
mod amx;
pub mod cells;
pub mod cpu;
mod cpu_info;
pub(crate) mod dropout;
pub mod gemm;
pub(crate) mod rows;

pub use cpu_info::CpuInfo;
pub use gemm::{
    gemm, gemm_in, matmul_packed, matmul_packed_panels, Mat, MatMut, PackedMatrix, Precision,
};
