use recurrent::kernels::{matmul_packed, Mat, MatMut, PackedMatrix};
use std::time::Instant;
fn main() {
    let args: Vec<usize> = std::env::args()
        .skip(1)
        .map(|s| s.parse().unwrap())
        .collect();
    let (m, k, n, ta) = (
        args[0],
        args[1],
        args[2],
        args.get(3).copied().unwrap_or(0) == 1,
    );
    let a: Vec<f32> = (0..m * k).map(|i| ((i * 7 % 13) as f32) * 0.01).collect();
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 5 % 11) as f32) * 0.01).collect();
    let mut c = vec![0.0f32; m * n];
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap();
    pool.install(|| {
        let am = if ta { Mat::t(&a, m) } else { Mat::new(&a, k) };
        let reps = (2e9 / (2.0 * (m * n * k) as f64)).max(3.0) as usize;
        let packed = PackedMatrix::pack(Mat::new(&b, n), k, n);
        let mut best = f64::MAX;
        for _ in 0..7 {
            let t = Instant::now();
            for _ in 0..reps {
                matmul_packed(m, am, &packed, 0.0, MatMut::new(&mut c, n));
            }
            best = best.min(t.elapsed().as_secs_f64() / reps as f64);
        }
        println!(
            "{m}x{k}x{n} ta={ta}: {:.1} GFLOP/s",
            2.0 * (m * n * k) as f64 / best / 1e9
        );
    });
}
