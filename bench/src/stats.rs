//! Rounds, shuffling and the figures every table prints: median, min–max,
//! and the median of per-round ratios against a named baseline (ratios
//! hold when the machine's speed drifts between rounds; absolute times do
//! not).

use std::io;

use fstx_testkit::rng::Rng;

/// The median of `v` (mean of the middle two for an even count); NaN if empty.
pub fn median(v: &[f64]) -> f64 {
    let mut s: Vec<f64> = v.iter().copied().filter(|x| !x.is_nan()).collect();
    if s.is_empty() {
        return f64::NAN;
    }
    s.sort_by(f64::total_cmp);
    let m = s.len() / 2;
    if s.len() % 2 == 1 {
        s[m]
    } else {
        (s[m - 1] + s[m]) / 2.0
    }
}

/// Smallest and largest of `v`.
pub fn min_max(v: &[f64]) -> (f64, f64) {
    v.iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| {
            (lo.min(x), hi.max(x))
        })
}

/// Runs `rounds` rounds; in each, every contender (index into the caller's
/// list of `n`) once, in an order shuffled by `rng`. `sample(i)` returns the
/// contender's figure for that round. Returns the figures per contender, in
/// round order (so that figures of one round can be divided).
pub fn interleave(
    rng: &mut Rng,
    n: usize,
    rounds: usize,
    mut sample: impl FnMut(usize) -> io::Result<f64>,
) -> io::Result<Vec<Vec<f64>>> {
    let mut out = vec![Vec::with_capacity(rounds); n];
    let mut order: Vec<usize> = (0..n).collect();
    for _ in 0..rounds {
        rng.shuffle(&mut order);
        let mut this = vec![f64::NAN; n];
        for &i in &order {
            this[i] = sample(i)?;
        }
        for (i, v) in this.into_iter().enumerate() {
            out[i].push(v);
        }
    }
    Ok(out)
}

/// One contender's line in a table.
#[derive(Debug, Clone)]
pub struct Row {
    /// Contender name.
    pub name: String,
    /// The figure per round.
    pub samples: Vec<f64>,
    /// Median over rounds of this round's figure divided by the baseline's
    /// figure of the same round.
    pub ratio: f64,
    /// An extra column (W2: peak RSS growth), already formatted.
    pub extra: Option<String>,
}

/// One table: a workload on one medium.
#[derive(Debug, Clone)]
pub struct Table {
    /// `W1`, `W3 N=1000`, ...
    pub workload: String,
    /// What one sample is.
    pub what: String,
    /// The medium's label.
    pub medium: String,
    /// Unit of the samples after `scale` (e.g. `µs/op`).
    pub unit: String,
    /// Samples are multiplied by this for printing.
    pub scale: f64,
    /// The baseline's name.
    pub baseline: String,
    /// Whether a smaller figure is better (times) or larger (throughput).
    pub lower_is_better: bool,
    /// Title of the extra column, if any.
    pub extra: Option<String>,
    /// The contenders.
    pub rows: Vec<Row>,
}

impl Table {
    /// Builds the rows from per-contender samples (seconds or a rate),
    /// ratios against the contender called `baseline`.
    pub fn from_samples(names: &[String], samples: Vec<Vec<f64>>, baseline: &str) -> Vec<Row> {
        let b = names.iter().position(|n| n == baseline);
        let base: Option<Vec<f64>> = b.map(|b| samples[b].clone());
        names
            .iter()
            .zip(samples)
            .map(|(name, s)| {
                let ratio = base.as_ref().map_or(f64::NAN, |base| {
                    let r: Vec<f64> = s.iter().zip(base).map(|(x, y)| x / y).collect();
                    median(&r)
                });
                Row {
                    name: name.clone(),
                    samples: s,
                    ratio,
                    extra: None,
                }
            })
            .collect()
    }

    /// The row called `name`.
    pub fn row(&self, name: &str) -> Option<&Row> {
        self.rows.iter().find(|r| r.name == name)
    }

    /// The contender's time relative to the baseline's (lower is faster),
    /// whatever the table's figure is.
    pub fn time_ratio(&self, name: &str) -> f64 {
        self.row(name).map_or(f64::NAN, |r| {
            if self.lower_is_better {
                r.ratio
            } else {
                1.0 / r.ratio
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_ratios() {
        assert!((median(&[3.0, 1.0, 2.0]) - 2.0).abs() < 1e-12);
        assert!((median(&[4.0, 1.0, 2.0, 3.0]) - 2.5).abs() < 1e-12);
        let names = vec!["a".to_string(), "b".to_string()];
        let rows = Table::from_samples(&names, vec![vec![2.0, 4.0, 9.0], vec![1.0, 2.0, 3.0]], "b");
        assert!((rows[0].ratio - 2.0).abs() < 1e-12);
        assert!((rows[1].ratio - 1.0).abs() < 1e-12);
    }

    #[test]
    fn interleave_runs_everyone_once_per_round() {
        let mut rng = Rng::new(7);
        let mut seen = Vec::new();
        let out = interleave(&mut rng, 3, 4, |i| {
            seen.push(i);
            Ok(i as f64)
        })
        .unwrap();
        assert_eq!(seen.len(), 12);
        assert!(out.iter().enumerate().all(|(i, v)| v == &vec![i as f64; 4]));
    }
}
