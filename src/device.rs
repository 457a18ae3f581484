//! Which device the tensors live on.

use anyhow::{bail, Result};
use tch::Device;

/// Parses `cpu`, `cuda` or `cuda:N`, checking that the device exists in this build.
pub fn parse(name: &str) -> Result<Device> {
    let device = match name {
        "cpu" => return Ok(Device::Cpu),
        "cuda" => Device::Cuda(0),
        _ => match name.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => bail!("unknown device {name:?} (expected cpu, cuda or cuda:N)"),
        },
    };
    if !cfg!(feature = "cuda") {
        bail!("device {name:?} needs a build with `--features cuda` and a CUDA libtorch");
    }
    let count = tch::Cuda::device_count() as usize;
    match device {
        Device::Cuda(i) if i >= count => {
            bail!("device {name:?} not found ({count} CUDA devices visible)")
        }
        _ => Ok(device),
    }
}

/// How `sll` writes a device: `cpu`, `cuda:N` (what [`parse`] reads).
pub fn name(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        Device::Mps => "mps".into(),
        Device::Vulkan => "vulkan".into(),
        _ => "cpu".into(),
    }
}
