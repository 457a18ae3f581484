// The part of libtorch's automatic mixed precision (at::autocast) that tch does not
// bind: tch's `autocast` toggles only the deprecated CUDA switch, so CPU autocast
// (bf16 convolutions and matrix products on CPUs with AVX-512 BF16 or AMX) needs
// at::autocast::set_autocast_enabled(device, ...) and set_autocast_dtype directly.
// The state is per thread. Every function catches C++ exceptions and reports
// failure through its return value: nothing unwinds into Rust.
#include <ATen/autocast_mode.h>
#include <ATen/detail/CUDAHooksInterface.h>

namespace {
c10::DeviceType device_type(int cuda) { return cuda ? c10::DeviceType::CUDA : c10::DeviceType::CPU; }
}  // namespace

extern "C" {

// Opens an autocast region on this thread for `cuda` (0: the CPU) in bf16. Writes
// whether autocast was already on for that device to `was_enabled`. 0 on success.
int sll_autocast_enter(int cuda, int* was_enabled) {
  try {
    auto device = device_type(cuda);
    *was_enabled = at::autocast::is_autocast_enabled(device) ? 1 : 0;
    at::autocast::set_autocast_dtype(device, at::kBFloat16);
    at::autocast::set_autocast_enabled(device, true);
    at::autocast::increment_nesting();
    return 0;
  } catch (...) {
    return 1;
  }
}

// Closes the region `sll_autocast_enter` opened: restores the device's switch and,
// when the outermost region closes, drops the cached bf16 copies of the weights
// (they go stale once the optimizer steps). 0 on success.
int sll_autocast_exit(int cuda, int was_enabled) {
  try {
    at::autocast::set_autocast_enabled(device_type(cuda), was_enabled != 0);
    if (at::autocast::decrement_nesting() == 0) {
      at::autocast::clear_cache();
    }
    return 0;
  } catch (...) {
    return 1;
  }
}

// Turns autocast on or off for `cuda` (0: the CPU) on this thread, inside an open
// region (a loss term computed in fp32). Returns the previous switch (1/0), -1 on error.
int sll_autocast_set(int cuda, int enabled) {
  try {
    auto device = device_type(cuda);
    int was = at::autocast::is_autocast_enabled(device) ? 1 : 0;
    at::autocast::set_autocast_enabled(device, enabled != 0);
    return was;
  } catch (...) {
    return -1;
  }
}

// Whether the current CUDA device computes bf16 natively (compute capability >= 8.0,
// what cuDNN's bf16 convolutions need): 1, 0, or -1 without CUDA or on error.
int sll_cuda_native_bf16() {
  try {
    const auto& hooks = at::detail::getCUDAHooks();
    if (!hooks.hasCUDA()) return -1;
    return hooks.supportsBFloat16ConvolutionWithCuDNNv8() ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

// Whether autocast is on for `cuda` (0: the CPU) on this thread: 1, 0, or -1 on error.
int sll_autocast_is_enabled(int cuda) {
  try {
    return at::autocast::is_autocast_enabled(device_type(cuda)) ? 1 : 0;
  } catch (...) {
    return -1;
  }
}

}  // extern "C"
