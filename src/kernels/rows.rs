//! Row buffers: tensors viewed as f32 slices, and rows split over threads.

use tch::{Device, Kind, Tensor};

/// u detached as a contiguous f32 CPU tensor.
pub(super) fn cpu_f32(u: &Tensor) -> Tensor {
    u.detach()
        .to_device(Device::Cpu)
        .to_kind(Kind::Float)
        .contiguous()
}

/// A fresh [rows, cols] f32 CPU tensor.
pub(super) fn empty(rows: usize, cols: usize) -> Tensor {
    Tensor::empty([rows as i64, cols as i64], (Kind::Float, Device::Cpu))
}

/// The values of a contiguous f32 CPU tensor (from [`cpu_f32`] or [`empty`]).
pub(super) fn f32_slice(t: &Tensor) -> &[f32] {
    // SAFETY: t is a contiguous f32 CPU tensor of t.numel() values, alive while borrowed.
    unsafe { std::slice::from_raw_parts(t.data_ptr() as *const f32, t.numel()) }
}

/// The values of a contiguous f32 CPU tensor that the fused pass owns alone (fresh from
/// [`empty`] or a matrix product), to write into.
pub(super) fn f32_slice_mut(t: &mut Tensor) -> &mut [f32] {
    // SAFETY: as f32_slice; the tensor is fresh, so no other handle reads its storage.
    unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, t.numel()) }
}

/// How many threads our own kernels split their work over: libtorch's intra-op threads.
pub fn kernel_threads() -> usize {
    tch::get_num_threads().max(1) as usize
}

/// Splits `n` rows into `threads` contiguous shares and runs `work(first row, rows,
/// chunks)` on each (see [`crate::parallel::run_shares`]), where chunks are the share's rows of each
/// (buffer, row width) in `buffers`.
pub(super) fn par_rows(
    n: usize,
    threads: usize,
    buffers: Vec<(&mut [f32], usize)>,
    work: impl Fn(usize, usize, &mut [&mut [f32]]) + Sync,
) {
    if n == 0 {
        return;
    }
    let rows_per = n.div_ceil(threads.clamp(1, n));
    let mut shares: Vec<Vec<&mut [f32]>> = (0..n.div_ceil(rows_per)).map(|_| vec![]).collect();
    for (buffer, width) in buffers {
        for (share, chunk) in shares.iter_mut().zip(buffer.chunks_mut(rows_per * width)) {
            share.push(chunk);
        }
    }
    crate::parallel::run_shares(shares.into_iter().enumerate(), |(s, mut chunks)| {
        let first = s * rows_per;
        work(first, rows_per.min(n - first), &mut chunks);
    });
}
