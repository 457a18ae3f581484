//! When a run first reached each accuracy threshold (recorded in `summary.json`).

use super::metrics::EpochMetrics;
use serde::{Deserialize, Serialize};

/// Accuracy thresholds whose time-to-accuracy every run records in `summary.json`.
pub const THRESHOLDS: [f64; 10] = [0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97, 0.98, 0.99];

/// When a run's test accuracy first reached a threshold (evaluation is per epoch, so
/// the resolution is one epoch).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TimeToAccuracy {
    /// The threshold, in [0, 1].
    pub threshold: f64,
    /// The first epoch whose test accuracy reached it.
    pub epoch: usize,
    /// Wall-clock seconds from the start of training to the end of that epoch's
    /// evaluation (evaluations and checkpoints included).
    pub wall_seconds: f64,
    /// Training seconds up to the end of that epoch (evaluation excluded).
    pub train_seconds: f64,
}

/// The first epoch of `history` at or above each of `thresholds` (those never reached
/// are left out).
pub fn time_to_accuracy(history: &[EpochMetrics], thresholds: &[f64]) -> Vec<TimeToAccuracy> {
    let wall = wall_times(history);
    let train = train_times(history);
    thresholds
        .iter()
        .filter_map(|&threshold| {
            let i = history.iter().position(|m| m.test_accuracy >= threshold)?;
            Some(TimeToAccuracy {
                threshold,
                epoch: history[i].epoch,
                wall_seconds: wall[i],
                train_seconds: train[i],
            })
        })
        .collect()
}

/// Cumulative training seconds at the end of each epoch.
fn train_times(history: &[EpochMetrics]) -> Vec<f64> {
    history
        .iter()
        .scan(0.0, |total, m| {
            *total += m.seconds;
            Some(*total)
        })
        .collect()
}

/// Wall seconds since the start of training at the end of each epoch's evaluation;
/// for runs written before this was recorded, the cumulative training seconds.
pub fn wall_times(history: &[EpochMetrics]) -> Vec<f64> {
    let train = train_times(history);
    history
        .iter()
        .zip(train)
        .map(|(m, t)| if m.wall_seconds > 0.0 { m.wall_seconds } else { t })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epoch(epoch: usize, accuracy: f64, seconds: f64, wall_seconds: f64) -> EpochMetrics {
        EpochMetrics {
            epoch,
            learning_rate: 1e-3,
            train_loss: vec![],
            test_accuracy: accuracy,
            block_test_accuracy: vec![],
            ensemble_test_accuracy: accuracy,
            seconds,
            train_samples_per_second: 1.0,
            wall_seconds,
        }
    }

    #[test]
    fn time_to_accuracy_is_the_first_epoch_at_or_above_each_threshold() {
        let history = [
            epoch(1, 0.85, 10.0, 12.0),
            epoch(2, 0.95, 10.0, 24.0),
            epoch(3, 0.94, 10.0, 36.0),
            epoch(4, 0.97, 10.0, 48.0),
        ];
        let times = time_to_accuracy(&history, &[0.8, 0.95, 0.96, 0.99]);
        let at = |t: f64| times.iter().find(|x| x.threshold == t).copied();
        assert_eq!(
            at(0.8).map(|x| (x.epoch, x.wall_seconds, x.train_seconds)),
            Some((1, 12.0, 10.0))
        );
        assert_eq!(
            at(0.95).map(|x| (x.epoch, x.wall_seconds, x.train_seconds)),
            Some((2, 24.0, 20.0))
        );
        assert_eq!(at(0.96).map(|x| x.epoch), Some(4));
        assert_eq!(at(0.99), None);
        // Old runs without wall times fall back to cumulative training seconds.
        let old = [epoch(1, 0.5, 7.0, 0.0), epoch(2, 0.9, 8.0, 0.0)];
        assert_eq!(time_to_accuracy(&old, &[0.9])[0].wall_seconds, 15.0);
    }
}
