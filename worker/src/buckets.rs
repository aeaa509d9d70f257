//! Shape buckets (`shape_buckets = true`): every new input shape costs libtorch a lot the
//! first time (cuDNN plans, allocator growth), and a dynamic batcher produces many shapes.
//! With buckets a batch is rounded up to one of a few sizes ([`bucket`]: powers of two up
//! to an eighth of the largest batch, then multiples of that eighth) by repeating its first
//! job, padded lengths are rounded up to a multiple of [`LENGTH_MULTIPLE`], the executor
//! warms every bucket at load ([`warm_shapes`]), and the extra rows are cut off the
//! outputs ([`unbucket`]).

use crate::config::ModelConfig;

/// Padded dimensions are rounded up to a multiple of this when buckets are on.
pub(crate) const LENGTH_MULTIPLE: i64 = 16;

/// The batch size a batch of `n` runs at: `n` itself without buckets; with buckets the
/// next power of two up to `max / 8`, then the next multiple of `max / 8` (at most `max`,
/// and never less than `n`).
pub(crate) fn bucket(n: usize, max: usize, buckets: bool) -> usize {
    if !buckets || n == 0 {
        return n;
    }
    let step = max.div_ceil(8).max(1);
    let b = if n <= step {
        n.next_power_of_two().min(step)
    } else {
        n.div_ceil(step) * step
    };
    b.min(max).max(n)
}

/// The (batch size, dynamic length) pairs to warm at load: batch 1 and the largest batch
/// without buckets; every bucket times every `warm_lengths` entry with them.
pub(crate) fn warm_shapes(config: &ModelConfig) -> Vec<(usize, i64)> {
    let max = config.max_batch_size as usize;
    if !config.shape_buckets {
        return vec![(1, 1), (max, 1)];
    }
    let mut sizes: Vec<usize> = (1..=max).map(|n| bucket(n, max, true)).collect();
    sizes.dedup();
    let lengths = if config.warm_lengths.is_empty() {
        vec![1]
    } else {
        config.warm_lengths.clone()
    };
    sizes
        .iter()
        .flat_map(|&n| lengths.iter().map(move |&l| (n, l)))
        .collect()
}

/// Cuts bucket rows off an output: keeps the first `n` along dim 0.
pub(crate) fn unbucket(t: tch::Tensor, n: usize) -> tch::Tensor {
    match t.size().first() {
        Some(&d) if d > n as i64 => t.narrow(0, 0, n as i64),
        _ => t,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn buckets_round_batch_sizes_up() {
        let sizes: Vec<usize> = (1..=128).map(|n| bucket(n, 128, true)).collect();
        let mut distinct = sizes.clone();
        distinct.dedup();
        assert_eq!(distinct, vec![1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128]);
        assert!(sizes.iter().enumerate().all(|(k, &b)| b > k));
        assert_eq!(bucket(5, 3, true), 5, "never below n");
        assert_eq!(bucket(37, 128, false), 37);
        let t = unbucket(tch::Tensor::zeros([4, 2], (Kind::Float, Device::Cpu)), 3);
        assert_eq!(t.size(), vec![3, 2]);
    }
}
