// Keeps freed memory in the process for reuse. glibc hands blocks above its mmap
// threshold (at most 32 MiB by default) straight back to the kernel when freed, so a
// training step that allocates a large gradient (MiniLM's word-embedding gradient is
// 45 MiB) pays for fresh zeroed pages, page fault by page fault, every step.
#include <malloc.h>

extern "C" {

// Serves blocks up to `mmap_threshold` bytes from the heap and trims the heap only
// above `trim_threshold` bytes free. 0 on success.
int absa_keep_freed_memory(int mmap_threshold, int trim_threshold) {
  bool ok = mallopt(M_MMAP_THRESHOLD, mmap_threshold) == 1 && mallopt(M_TRIM_THRESHOLD, trim_threshold) == 1;
  return ok ? 0 : -1;
}

// Gives the kernel back every whole free page of the heap (the thresholds above keep
// them otherwise): after loading a model, whose staging buffers are not needed again.
void absa_release_free_memory() { malloc_trim(0); }

}  // extern "C"
