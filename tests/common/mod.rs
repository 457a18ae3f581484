//! Helpers shared by the integration tests.

use sll::data::Dataset;
use tch::{Kind, Tensor};

/// A synthetic set of `n` 1x2x2 images whose pixels all equal the example's
/// index, with label `index % 10`.
pub fn synthetic(n: i64) -> Dataset {
    Dataset {
        images: Tensor::arange(n, (Kind::Float, tch::Device::Cpu))
            .view([n, 1, 1, 1])
            .expand([n, 1, 2, 2], false)
            .contiguous(),
        labels: Tensor::arange(n, (Kind::Int64, tch::Device::Cpu)).remainder(10),
        classes: 10,
    }
}
