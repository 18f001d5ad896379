//! Splitting labelled examples into training and validation parts.

/// Splits indices `0..labels.len()` into (train, validation), stratified by label, with
/// about `fraction` of each class (at least one when the class has two or more examples).
/// The split depends on `seed` only, not on the order classes appear in.
pub fn stratified_split(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    use rand::seq::SliceRandom;
    use rand::SeedableRng;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ 0x5eed);
    let classes = labels.iter().max().map_or(0, |m| m + 1);
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for c in 0..classes {
        let mut idx: Vec<usize> = (0..labels.len()).filter(|&i| labels[i] == c).collect();
        idx.shuffle(&mut rng);
        let n_val = if idx.len() >= 2 {
            ((idx.len() as f64 * fraction).round() as usize).max(1)
        } else {
            0
        };
        val.extend_from_slice(&idx[..n_val]);
        train.extend_from_slice(&idx[n_val..]);
    }
    train.sort_unstable();
    val.sort_unstable();
    (train, val)
}
