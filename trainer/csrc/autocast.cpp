// Autocast with a chosen reduced-precision dtype per device type. libtorch has it
// (at::autocast::set_autocast_dtype); tch 0.26 binds only CUDA autocast with
// libtorch's default dtype (fp16), so the trainer calls these three instead.
#include <ATen/autocast_mode.h>
#include <ATen/cpu/Utils.h>

#include <exception>

extern "C" {

// Enables or disables autocast on `device_type` (c10::DeviceType) with
// `scalar_type` (c10::ScalarType) as its reduced precision. 0 on success, -1 if
// libtorch refused (an unsupported dtype for that device, say).
int absa_autocast_set(int device_type, bool enabled, int scalar_type) {
  try {
    auto device = static_cast<c10::DeviceType>(device_type);
    at::autocast::set_autocast_dtype(device, static_cast<c10::ScalarType>(scalar_type));
    at::autocast::set_autocast_enabled(device, enabled);
    return 0;
  } catch (const std::exception&) {
    return -1;
  }
}

bool absa_autocast_is_enabled(int device_type) {
  return at::autocast::is_autocast_enabled(static_cast<c10::DeviceType>(device_type));
}

int absa_autocast_dtype(int device_type) {
  return static_cast<int>(at::autocast::get_autocast_dtype(static_cast<c10::DeviceType>(device_type)));
}

// Nesting and the cast cache, as torch.autocast's context manager keeps them.
int absa_autocast_enter() { return at::autocast::increment_nesting(); }

void absa_autocast_exit() {
  if (at::autocast::decrement_nesting() == 0) at::autocast::clear_cache();
}

// The CPU's bf16 instructions as libtorch's cpuinfo sees them (what
// torch.cpu._is_avx512_bf16_supported() and _is_amx_tile_supported() read):
// bit 0 avx512_bf16, bit 1 amx_bf16.
int absa_cpu_bf16_features() {
  try {
    auto caps = at::cpu::get_cpu_capabilities();
    auto has = [&](const char* key) {
      auto found = caps.find(key);
      return found != caps.end() && found->second.isBool() && found->second.toBool();
    };
    return (has("avx512_bf16") ? 1 : 0) | (has("amx_bf16") && has("amx_tile") ? 2 : 0);
  } catch (const std::exception&) {
    return 0;
  }
}

}  // extern "C"
