use recurrent::kernels::cpu::{force_level, Level};
use recurrent::kernels::{gemm, matmul_packed, Mat, MatMut, PackedMatrix};
use std::time::Instant;
fn main() {
    for lvl in [Level::Avx512, Level::Avx2] {
        force_level(Some(lvl));
        for &(m, k, n) in &[
            (6400, 512, 2048),
            (64, 512, 2048),
            (32, 256, 1024),
            (1, 256, 1024),
        ] {
            let a = vec![0.5f32; m * k];
            let b = vec![0.25f32; k * n];
            let mut c = vec![0f32; m * n];
            let p = PackedMatrix::pack(Mat::t(&b, k), k, n);
            let reps = (2e9 / (2.0 * (m * n * k) as f64)).max(3.0) as usize;
            let t = Instant::now();
            for _ in 0..reps {
                matmul_packed(m, Mat::new(&a, k), &p, 0.0, MatMut::new(&mut c, n));
            }
            let s = t.elapsed().as_secs_f64() / reps as f64;
            let t2 = Instant::now();
            gemm(
                m,
                n,
                k,
                Mat::new(&a, k),
                Mat::t(&b, k),
                0.0,
                MatMut::new(&mut c, n),
            );
            let s2 = t2.elapsed().as_secs_f64();
            println!(
                "{lvl:?} {m}x{k}x{n}: packed {:.1} GFLOP/s, gemm incl. packing {:.1}",
                2.0 * (m * n * k) as f64 / s / 1e9,
                2.0 * (m * n * k) as f64 / s2 / 1e9
            );
        }
    }
}
