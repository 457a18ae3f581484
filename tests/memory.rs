//! Memory accounting on a known allocation pattern. Alone in its test binary (the
//! live-byte count is process-wide, so other tests allocating at the same time would
//! disturb it).

use sll::heap::{live_bytes, PeakTracker};
use std::time::Duration;
use tch::{Device, Kind, Tensor};

const MIB: usize = 1 << 20;

#[test]
fn peak_tracker_sees_three_tensors_of_4_mib_and_their_release() {
    let four_mib = || Tensor::ones([(MIB as i64)], (Kind::Float, Device::Cpu));
    let tracker = PeakTracker::start(None);
    let before = live_bytes();
    let a = four_mib();
    let b = four_mib();
    let c = four_mib();
    sll::heap::probe();
    let with_three = live_bytes();
    drop(b);
    let with_two = live_bytes();
    let peak = tracker.finish();
    let added = peak.added() as f64 / MIB as f64;
    assert!((added - 12.0).abs() < 0.25, "peak added {added} MiB, expected 12");
    let live = (with_three - before) as f64 / MIB as f64;
    assert!((live - 12.0).abs() < 0.25, "live grew by {live} MiB, expected 12");
    let released = (with_three - with_two) as f64 / MIB as f64;
    assert!(
        (released - 4.0).abs() < 0.25,
        "freeing one released {released} MiB, expected 4"
    );
    drop((a, c));

    // A transient peak between explicit probes is caught by the background sampler.
    let tracker = PeakTracker::start(Some(Duration::from_micros(20)));
    {
        let _t = four_mib();
        std::thread::sleep(Duration::from_millis(20));
    }
    let added = tracker.finish().added() as f64 / MIB as f64;
    assert!(
        (added - 4.0).abs() < 0.25,
        "sampled peak added {added} MiB, expected 4"
    );
}
