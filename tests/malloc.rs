//! `train.keep_freed_memory`: the buffers a training step frees are reused by the next
//! step instead of being faulted in again page by page. Its own test binary without the
//! test harness: the allocator's settings are process-wide and cannot be unset, and the
//! trainers allocate on the main thread (glibc's main arena), as `main` here does.

use tch::{Kind, Tensor};

/// Minor page faults of this process so far.
fn minor_faults() -> i64 {
    // SAFETY: an all-zero rusage is a valid value for getrusage to overwrite.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage fills the struct it is given.
    assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) }, 0);
    usage.ru_minflt
}

/// Page faults of `steps` convolution training steps shaped like the first layer of
/// the cifar10-vgg preset (batch 128, 3→64 channels, 32×32: a 33.5 MB activation).
fn faults_of_steps(weight: &Tensor, steps: usize) -> i64 {
    let before = minor_faults();
    for _ in 0..steps {
        let x = Tensor::randn([128, 3, 32, 32], (Kind::Float, tch::Device::Cpu));
        let y = x.conv2d(weight, None::<Tensor>, [1, 1], [1, 1], [1, 1], 1).relu();
        y.square().mean(Kind::Float).backward();
    }
    minor_faults() - before
}

fn main() {
    tch::set_num_threads(1);
    tch::manual_seed(0);
    let weight = Tensor::randn([64, 3, 3, 3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
    faults_of_steps(&weight, 2);
    let default = faults_of_steps(&weight, 5);
    assert!(sll::malloc::keep_freed_memory(), "allocator settings not applied");
    faults_of_steps(&weight, 2);
    let kept = faults_of_steps(&weight, 5);
    // One 33.5 MB buffer faulted in once is 8,192 pages; glibc's defaults fault several
    // such buffers in on every step.
    assert!(
        default > 5 * 8192,
        "glibc's defaults faulted only {default} pages in 5 steps"
    );
    assert!(
        kept * 10 < default,
        "5 steps after keep_freed_memory faulted {kept} pages, with glibc's defaults {default}"
    );
    println!("malloc: 5 convolution steps faulted {default} pages with glibc's defaults, {kept} with keep_freed_memory");
    println!("1 passed, 0 failed");
}
