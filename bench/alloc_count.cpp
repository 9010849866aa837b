// libts_alloc_count.so: counts a process's heap allocations (make bench's E1 allocation figure).
//
//   LD_PRELOAD=.../libts_alloc_count.so TS_ALLOC_COUNT_DIR=/some/dir program ...
//
// Every malloc, calloc, realloc, aligned_alloc, posix_memalign, memalign and valloc of the
// process (operator new included: libstdc++'s calls malloc) is counted and forwarded to glibc's
// allocator. At exit the totals are written to TS_ALLOC_COUNT_DIR/<program>.<pid> as
// "allocations <n> bytes <n>". The counters are relaxed atomics: a few nanoseconds per call.
// bench/run-bench runs the pipeline twice at one rate with different durations; the difference
// of the counts over the difference of the trades is the steady-state figure per trade, without
// what start-up and shutdown allocate.
#include <fcntl.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdio>
#include <cstdlib>

extern "C" {
void* __libc_malloc(std::size_t size);
void* __libc_calloc(std::size_t count, std::size_t size);
void* __libc_realloc(void* pointer, std::size_t size);
void* __libc_memalign(std::size_t alignment, std::size_t size);
}

namespace {

std::atomic<unsigned long> allocations{0};
std::atomic<unsigned long> allocated_bytes{0};

void count(std::size_t size) {
  allocations.fetch_add(1, std::memory_order_relaxed);
  allocated_bytes.fetch_add(size, std::memory_order_relaxed);
}

__attribute__((destructor)) void write_counts() {
  const char* dir = std::getenv("TS_ALLOC_COUNT_DIR");
  if (dir == nullptr || dir[0] == '\0') return;
  char path[4096];
  std::snprintf(path, sizeof path, "%s/%s.%ld", dir, program_invocation_short_name,
                static_cast<long>(::getpid()));
  char text[128];
  const int length = std::snprintf(text, sizeof text, "allocations %lu bytes %lu\n",
                                   allocations.load(), allocated_bytes.load());
  // No stdio streams (they allocate): open/write. A failure shows as a missing file to the
  // reader (run-bench reports the figure as failed).
  const int fd = ::open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
  if (fd < 0) return;
  const ssize_t written = ::write(fd, text, static_cast<std::size_t>(length));
  static_cast<void>(written);
  ::close(fd);
}

}  // namespace

extern "C" {

void* malloc(std::size_t size) {
  count(size);
  return __libc_malloc(size);
}

void* calloc(std::size_t n, std::size_t size) {
  count(n * size);
  return __libc_calloc(n, size);
}

void* realloc(void* pointer, std::size_t size) {
  count(size);
  return __libc_realloc(pointer, size);
}

void* memalign(std::size_t alignment, std::size_t size) {
  count(size);
  return __libc_memalign(alignment, size);
}

void* aligned_alloc(std::size_t alignment, std::size_t size) {
  count(size);
  return __libc_memalign(alignment, size);
}

void* valloc(std::size_t size) {
  count(size);
  return __libc_memalign(static_cast<std::size_t>(::sysconf(_SC_PAGESIZE)), size);
}

int posix_memalign(void** out, std::size_t alignment, std::size_t size) {
  if (alignment % sizeof(void*) != 0 || (alignment & (alignment - 1)) != 0) return EINVAL;
  count(size);
  void* pointer = __libc_memalign(alignment, size);
  if (pointer == nullptr) return ENOMEM;
  *out = pointer;
  return 0;
}

}  // extern "C"
