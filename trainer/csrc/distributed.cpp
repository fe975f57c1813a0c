// c10d, torch.distributed's engine inside libtorch, for the trainer's ranks: a
// TCPStore for the rendezvous (global rank 0 hosts it, as `init_process_group`'s
// env:// method does), a Gloo or NCCL backend, and the collectives sharded training
// needs. A C ABI over it, so Rust can call it; tch passes tensors as at::Tensor*.
//
// Every call catches what c10d throws (a peer that died, a timeout) and returns an
// error code; the message is kept per thread for absa_dist_last_error.
#include <ATen/ATen.h>
#include <torch/csrc/distributed/c10d/Backend.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/csrc/distributed/c10d/Types.hpp>
#include <torch/csrc/distributed/c10d/Work.hpp>
#ifdef ABSA_WITH_NCCL
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#endif

#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <exception>
#include <string>
#include <vector>

namespace {

thread_local std::string last_error;

// Runs `f`, turning an exception into -1 and a message.
template <typename F>
int guarded(F&& f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    last_error = e.what();
  } catch (...) {
    last_error = "unknown C++ exception";
  }
  return -1;
}

bool is_loopback(const std::string& host) {
  return host == "localhost" || host.rfind("127.", 0) == 0 || host == "::1";
}

}  // namespace

struct AbsaGroup {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::Backend> backend;
};

struct AbsaWork {
  c10::intrusive_ptr<c10d::Work> work;
};

extern "C" {

// The calling thread's last error message (valid until its next failing call).
const char* absa_dist_last_error() { return last_error.c_str(); }

// Whether this libtorch was built with the NCCL backend in this shim.
int absa_dist_has_nccl() {
#ifdef ABSA_WITH_NCCL
  return 1;
#else
  return 0;
#endif
}

// Joins the group: connects to (rank 0: hosts) the TCPStore at host:port and builds
// the backend ("gloo", or "nccl" on CUDA device `device_index`). `timeout_ms` bounds
// the rendezvous and every collective. Null on failure.
AbsaGroup* absa_dist_new(const char* backend, const char* host, int port, int rank, int world, int64_t timeout_ms,
                         int device_index) {
  AbsaGroup* group = nullptr;
  int rc = guarded([&] {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    c10d::TCPStoreOptions store_options;
    store_options.port = static_cast<std::uint16_t>(port);
    store_options.isServer = rank == 0;
    store_options.numWorkers = static_cast<std::size_t>(world);
    store_options.waitWorkers = true;
    store_options.timeout = timeout;
    auto store = c10::make_intrusive<c10d::TCPStore>(std::string(host), store_options);
    std::string name(backend);
    c10::intrusive_ptr<c10d::Backend> made;
    if (name == "gloo") {
      auto options = c10d::ProcessGroupGloo::Options::create(timeout);
      // As torch.distributed: GLOO_SOCKET_IFNAME names the interface; otherwise the
      // address this host's name resolves to (loopback when the group is local).
      if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME")) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
      } else if (is_loopback(host)) {
        options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname("127.0.0.1"));
      } else {
        options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
      }
      made = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, world, options);
    } else if (name == "nccl") {
#ifdef ABSA_WITH_NCCL
      auto options = c10d::ProcessGroupNCCL::Options::create();
      options->timeout = timeout;
      auto nccl = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, world, options);
      nccl->setBoundDeviceId(at::Device(at::kCUDA, device_index));
      made = nccl;
#else
      (void)device_index;
      throw std::runtime_error("this trainer was built without NCCL (a CPU libtorch): use the gloo backend");
#endif
    } else {
      throw std::runtime_error("unknown backend " + name + " (gloo or nccl)");
    }
    group = new AbsaGroup{store, made};
  });
  return rc == 0 ? group : nullptr;
}

// Leaves the group (the backend shuts down when the last reference goes).
void absa_dist_free(AbsaGroup* group) {
  guarded([&] {
    if (group && group->backend) group->backend->shutdown();
  });
  delete group;
}

// Sum of `t` over the ranks, in place. Null on failure.
AbsaWork* absa_dist_all_reduce(AbsaGroup* group, at::Tensor* t) {
  AbsaWork* out = nullptr;
  guarded([&] {
    std::vector<at::Tensor> tensors{*t};
    c10d::AllreduceOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    out = new AbsaWork{group->backend->allreduce(tensors, options)};
  });
  return out;
}

// Every rank's `input` concatenated into `output` (world · input elements), in rank
// order (all_gather_into_tensor). Null on failure.
AbsaWork* absa_dist_all_gather(AbsaGroup* group, at::Tensor* output, at::Tensor* input) {
  AbsaWork* out = nullptr;
  guarded([&] { out = new AbsaWork{group->backend->_allgather_base(*output, *input, c10d::AllgatherOptions())}; });
  return out;
}

// `input` (world · output elements) summed over the ranks; rank r receives part r in
// `output` (reduce_scatter_tensor). Null on failure.
AbsaWork* absa_dist_reduce_scatter(AbsaGroup* group, at::Tensor* output, at::Tensor* input) {
  AbsaWork* out = nullptr;
  guarded([&] {
    c10d::ReduceScatterOptions options;
    options.reduceOp = c10d::ReduceOp::SUM;
    out = new AbsaWork{group->backend->_reduce_scatter_base(*output, *input, options)};
  });
  return out;
}

// `t` from rank `root` to every rank, in place. Null on failure.
AbsaWork* absa_dist_broadcast(AbsaGroup* group, at::Tensor* t, int root) {
  AbsaWork* out = nullptr;
  guarded([&] {
    std::vector<at::Tensor> tensors{*t};
    c10d::BroadcastOptions options;
    options.rootRank = root;
    out = new AbsaWork{group->backend->broadcast(tensors, options)};
  });
  return out;
}

// Waits for `work` and frees it: 0, or -1 when the collective failed (a rank died,
// the timeout passed).
int absa_work_wait(AbsaWork* work) {
  int rc = guarded([&] { work->work->wait(); });
  delete work;
  return rc;
}

}  // extern "C"
