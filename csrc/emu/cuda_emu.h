// CPU emulation of the CUDA features the kernels use, so CI (no GPU) runs the real kernel code. Each block's
// threads are fibers (ucontext) on one OS thread, run round-robin: __syncthreads yields, so one round brings
// every thread to the next barrier. Blocks run one after another, so a function-level `static` array stands in
// for __shared__. tests/ops/conftest.py compiles csrc/ with -DVIDEOMAE_EMULATE -include this header, after
// rewriting `k<<<grid, block, smem, stream>>>(args)` into `::emu::launch(grid, block, smem, stream, k)(args)`.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>
#include <ucontext.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <memory>
#include <stdexcept>
#include <vector>

#undef __shared__
#define __shared__ static

using std::max;
using std::min;

inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;

namespace emu {

struct Block {
  std::vector<float> shfl;
  std::vector<float> smem;  // dynamic shared memory; operator new: 16-byte aligned
};
inline Block* block = nullptr;

struct Fiber {
  ucontext_t ctx;
  std::unique_ptr<char[]> stack;
  uint3 tid;
  bool done;
};
constexpr size_t kStack = 128 * 1024;  // untouched pages are never committed
inline ucontext_t scheduler;
inline Fiber* current = nullptr;
inline std::function<void()>* body = nullptr;

inline void fiber_main() {
  (*body)();
  current->done = true;  // uc_link resumes the scheduler
}

inline void yield() { swapcontext(&current->ctx, &scheduler); }

inline unsigned flat_thread() { return (threadIdx.z * blockDim.y + threadIdx.y) * blockDim.x + threadIdx.x; }

template <typename K>
auto launch(dim3 grid, dim3 blk, size_t smem, cudaStream_t, K kernel) {
  return [=](auto... args) {
    const unsigned threads = blk.x * blk.y * blk.z;
    if (threads == 0 || threads > 1024) throw std::runtime_error("emu: bad block size");
    std::function<void()> run = [&] { kernel(args...); };
    std::vector<Fiber> fibers(threads);
    for (auto& f : fibers) f.stack.reset(new char[kStack]);
    blockDim = blk;
    gridDim = grid;
    body = &run;
    for (unsigned bz = 0; bz < grid.z; ++bz)
      for (unsigned by = 0; by < grid.y; ++by)
        for (unsigned bx = 0; bx < grid.x; ++bx) {
          Block shared{std::vector<float>(threads), std::vector<float>((smem + 3) / 4 + 4)};
          block = &shared;
          blockIdx = {bx, by, bz};
          unsigned i = 0;
          for (unsigned tz = 0; tz < blk.z; ++tz)
            for (unsigned ty = 0; ty < blk.y; ++ty)
              for (unsigned tx = 0; tx < blk.x; ++tx, ++i) {
                Fiber& f = fibers[i];
                f.tid = {tx, ty, tz};
                f.done = false;
                getcontext(&f.ctx);
                f.ctx.uc_stack.ss_sp = f.stack.get();
                f.ctx.uc_stack.ss_size = kStack;
                f.ctx.uc_link = &scheduler;
                makecontext(&f.ctx, fiber_main, 0);
              }
          for (bool running = true; running;) {  // one round: every live thread runs to its next barrier
            running = false;
            for (auto& f : fibers) {
              if (f.done) continue;
              current = &f;
              threadIdx = f.tid;
              swapcontext(&scheduler, &f.ctx);
              running = running || !f.done;
            }
          }
        }
    block = nullptr;
  };
}

}  // namespace emu

inline void __syncthreads() { emu::yield(); }

// Only called block-uniformly (block_sum), so a block-wide exchange is an exact stand-in for the warp shuffle.
inline float __shfl_xor_sync(unsigned, float v, int lane_mask) {
  const unsigned t = emu::flat_thread();
  emu::block->shfl[t] = v;
  __syncthreads();
  const float r = emu::block->shfl[t ^ static_cast<unsigned>(lane_mask)];
  __syncthreads();
  return r;
}

inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fmul_rn(float a, float b) { return a * b; }
