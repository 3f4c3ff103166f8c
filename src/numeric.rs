//! Small numeric helpers that the stages and the tools share.

use std::cmp::Ordering;

/// A number a median can be taken of.
pub(crate) trait Sample: Copy {
    fn order(&self, other: &Self) -> Ordering;
    fn midpoint(a: Self, b: Self) -> Self;
}

impl Sample for f32 {
    fn order(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
    fn midpoint(a: Self, b: Self) -> Self {
        (a + b) / 2.0
    }
}

impl Sample for f64 {
    fn order(&self, other: &Self) -> Ordering {
        self.total_cmp(other)
    }
    fn midpoint(a: Self, b: Self) -> Self {
        (a + b) / 2.0
    }
}

/// The median of `values`, which it sorts in place (`total_cmp`: NaN last): the middle
/// value, or the mean of the middle two for an even count; `None` for none.
pub(crate) fn median<T: Sample>(values: &mut [T]) -> Option<T> {
    values.sort_unstable_by(T::order);
    let n = values.len();
    let upper = *values.get(n / 2)?;
    if n % 2 == 1 {
        return Some(upper);
    }
    Some(T::midpoint(*values.get(n / 2 - 1)?, upper))
}

/// The nearest-rank `q` quantile (0 to 1) of `sorted`, ascending: the value at rank
/// round((n - 1) q); `None` for none.
pub(crate) fn nearest_rank<T: Copy>(sorted: &[T], q: f64) -> Option<T> {
    let last = sorted.len().checked_sub(1)?;
    let rank = (last as f64 * q.clamp(0.0, 1.0)).round() as usize;
    sorted.get(rank.min(last)).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_even_and_empty_sets() {
        assert_eq!(median(&mut [3.0f64, 1.0, 2.0]), Some(2.0));
        assert_eq!(median(&mut [4.0f64, 1.0, 3.0, 2.0]), Some(2.5));
        assert_eq!(median(&mut [5.0f32, 1.0]), Some(3.0));
        assert_eq!(median::<f32>(&mut []), None);
        // NaN sorts last: one among many moves the median by one place, not to NaN.
        assert_eq!(median(&mut [f32::NAN, 1.0, 2.0, 3.0, 4.0]), Some(3.0));
    }

    #[test]
    fn nearest_rank_quantiles() {
        let v = [1u64, 2, 3, 4, 10];
        assert_eq!(nearest_rank(&v, 0.5), Some(3));
        assert_eq!(nearest_rank(&v, 0.99), Some(10));
        assert_eq!(nearest_rank(&v, 0.0), Some(1));
        assert_eq!(nearest_rank::<u64>(&[], 0.5), None);
    }
}
