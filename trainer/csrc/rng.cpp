// A random generator per thread for dropout masks. libtorch's dropout draws from one
// process-wide generator, so threads training parts of a batch together would draw
// in whatever order they happen to run; each thread drawing from its own seeded
// generator keeps every mask, and so the run, reproducible.
#include <ATen/ATen.h>
#include <ATen/CPUGeneratorImpl.h>

#include <cstdint>
#include <exception>
#include <optional>

namespace {
thread_local std::optional<at::Generator> thread_generator;
}

extern "C" {

// Gives the calling thread its own CPU generator, seeded with `seed`.
void absa_rng_seed_thread(uint64_t seed) {
  thread_generator = at::make_generator<at::CPUGeneratorImpl>(seed);
}

// Drops the calling thread's generator.
void absa_rng_clear_thread() { thread_generator.reset(); }

// Fills `t` (a CPU tensor; tch passes at::Tensor*) in place with Bernoulli(p) draws
// from the calling thread's generator. 0 on success, -1 without a generator or if
// libtorch refused.
int absa_rng_bernoulli_(at::Tensor* t, double p) {
  if (!thread_generator) return -1;
  try {
    t->bernoulli_(p, *thread_generator);
    return 0;
  } catch (const std::exception&) {
    return -1;
  }
}

}  // extern "C"
