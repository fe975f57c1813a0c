//! The validation split: stratified by label and seeded, so the same data and seed
//! always hold out the same rows.

use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Splits row indices `0..labels.len()` into (train, validation). The validation part
/// has `ceil(fraction * n)` rows, shared between classes in proportion to their sizes
/// (largest remainders first), each class's rows chosen by a seeded shuffle. Both
/// lists come back sorted.
pub fn stratified_split(labels: &[usize], fraction: f64, seed: u64) -> (Vec<usize>, Vec<usize>) {
    let n = labels.len();
    let n_classes = labels.iter().copied().max().map_or(0, |m| m + 1);
    let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); n_classes];
    for (i, &l) in labels.iter().enumerate() {
        by_class[l].push(i);
    }
    let target = ((fraction * n as f64).ceil() as usize).min(n);
    let exact: Vec<f64> = by_class.iter().map(|c| c.len() as f64 * target as f64 / n.max(1) as f64).collect();
    let mut take: Vec<usize> = exact.iter().map(|e| e.floor() as usize).collect();
    let mut order: Vec<usize> = (0..n_classes).collect();
    order.sort_by(|&a, &b| (exact[b] - exact[b].floor()).total_cmp(&(exact[a] - exact[a].floor())).then(a.cmp(&b)));
    let mut missing = target - take.iter().sum::<usize>();
    for c in order.into_iter().cycle().take(n_classes * 2) {
        if missing == 0 {
            break;
        }
        if take[c] < by_class[c].len() {
            take[c] += 1;
            missing -= 1;
        }
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (mut train, mut validation) = (Vec::new(), Vec::new());
    for (c, rows) in by_class.iter_mut().enumerate() {
        rows.shuffle(&mut rng);
        validation.extend_from_slice(&rows[..take[c]]);
        train.extend_from_slice(&rows[take[c]..]);
    }
    train.sort_unstable();
    validation.sort_unstable();
    (train, validation)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_percent_of_2313_is_232_in_proportion_to_the_classes() {
        let labels: Vec<usize> = (0..2313)
            .map(|i| {
                if i < 870 {
                    0
                } else if i < 1330 {
                    1
                } else {
                    2
                }
            })
            .collect();
        let (train, val) = stratified_split(&labels, 0.1, 42);
        assert_eq!((train.len(), val.len()), (2081, 232));
        let per_class = |c| val.iter().filter(|&&i| labels[i] == c).count();
        assert_eq!(per_class(0), 87);
        assert!((46..=47).contains(&per_class(1)) && (98..=99).contains(&per_class(2)));
    }

    #[test]
    fn the_same_seed_gives_the_same_split_and_another_seed_another() {
        let labels: Vec<usize> = (0..500).map(|i| i % 3).collect();
        assert_eq!(stratified_split(&labels, 0.1, 7), stratified_split(&labels, 0.1, 7));
        assert_ne!(stratified_split(&labels, 0.1, 7).1, stratified_split(&labels, 0.1, 8).1);
    }

    #[test]
    fn train_and_validation_partition_the_rows() {
        let labels: Vec<usize> = (0..101).map(|i| (i * 7) % 4).collect();
        let (mut train, val) = stratified_split(&labels, 0.25, 1);
        train.extend(&val);
        train.sort_unstable();
        assert_eq!(train, (0..101).collect::<Vec<_>>());
    }
}
