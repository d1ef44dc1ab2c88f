/*
 * sf_cuda_emu.h -- run CUDA kernel source on the CPU ("cuda-emu" backend).
 *
 * The very same .cu kernel text that nvcc compiles for the GPU is compiled by
 * g++ (C++17) with this header included first:
 *
 *     g++ -std=c++17 -O1 -fopenmp -include sf_cuda_emu.h -x c++ kernels.cu ...
 *
 * (or `#include "sf_cuda_emu.h"` and then `#include "kernels.cu"` from a C++
 * driver).  g++ does not know the .cu suffix, hence `-x c++`.  Never give this
 * header to nvcc: it #errors when __CUDACC__ is defined.  Kernel code can test
 * SF_CUDA_EMU (defined to 1 here); __CUDA_ARCH__ is NOT defined, as in any
 * host compilation.
 *
 * ---------------------------------------------------------------------------
 * EXECUTION MODEL
 * ---------------------------------------------------------------------------
 * Launching is done by host code (ours), not with <<< >>>:
 *
 *     sf_emu::launch(dim3 grid, dim3 block, size_t dynamic_shared,
 *                    bool uses_barriers, F&& body);      // body() = one thread
 *     SF_EMU_LAUNCH(kernel, grid, block, uses_barriers, args...);
 *     SF_EMU_LAUNCH_SHARED(kernel, grid, block, dynamic_shared, uses_barriers, args...);
 *
 * The macros evaluate the arguments once, copy them into the launch (as a real
 * launch does) and call kernel(args...) for every CUDA thread.  kernel may be a
 * template instance (wrap it in parentheses if it contains a comma); give grid
 * and block as integers or dim3(...), not as {..} lists (macro commas).
 * launch() calls body() once per CUDA thread, concurrently from several OS
 * threads, so body must be safe to call concurrently (a lambda calling the
 * kernel is).
 *
 *  - Blocks are distributed over OpenMP threads (schedule(dynamic)) when
 *    compiled with -fopenmp (and the launch has at least
 *    SF_EMU_MIN_PARALLEL_THREADS threads), else run one after another.
 *    OMP_NUM_THREADS=1 makes a run serial and deterministic in its block
 *    order.
 *  - uses_barriers == false (fast path): the threads of a block run one after
 *    another, to completion, on the OS thread's own stack (x fastest, then y,
 *    then z).  __syncthreads() and the warp collectives (__syncwarp, shuffles,
 *    votes, ...) then abort with a message, unless the block has one thread.
 *  - uses_barriers == true: every CUDA thread of a block is a cooperative fiber
 *    (ucontext: makecontext/swapcontext, own stack) and all fibers of a block
 *    run on ONE OS thread.  A fiber runs until it reaches a barrier or a warp
 *    collective or returns; then the next runnable fiber of the block runs
 *    (round robin, FIFO).  Fibers and their stacks are made once per OS thread
 *    and reused for all later blocks and launches.
 *  - __syncthreads() completes when every live (not yet returned) thread of the
 *    block has reached it.  Threads that returned early no longer count, so
 *    the others pass (in CUDA a barrier not reached by all threads is
 *    undefined behaviour: do not rely on this).  __syncthreads_count/_and/_or
 *    work.
 *  - Warp = 32 consecutive linear thread ids (x + y*bx + z*bx*by), as in CUDA.
 *    __syncwarp, __shfl*_sync, __ballot_sync, __any_sync, __all_sync,
 *    __match_any_sync, __match_all_sync and __reduce_*_sync are collectives:
 *    a lane deposits its operand and waits until every live lane named in
 *    `mask` has arrived at a collective with the same op and the same mask;
 *    then all results are computed at once.  Partial masks work (the lanes of
 *    the mask must all execute the call, as CUDA requires).  Lanes that do not
 *    exist (partial last warp) or have returned are left out of the mask.  A
 *    shuffle whose source lane is outside the segment or not participating
 *    returns the caller's own value (CUDA: undefined if not participating).
 *    Participants that disagree on op or mask abort with a message.
 *  - If nothing in a block can run any more (e.g. some threads wait at
 *    __syncthreads while others of the same warp wait in a warp collective),
 *    the emulator prints a deadlock report and aborts.
 *
 * ---------------------------------------------------------------------------
 * SHARED MEMORY
 * ---------------------------------------------------------------------------
 * `__shared__` is `thread_local`: per OS thread, and since all threads of a
 * block run on one OS thread and one block at a time, that is per block.
 * Inside a function thread_local implies static, so `__shared__ float t[256];`
 * is fine.  Caveats:
 *  - no initialisers (CUDA forbids them as well; here they would run once per
 *    OS thread, not per block);
 *  - the contents left by the previous block on that OS thread remain: a
 *    kernel must not rely on them (CUDA gives no guarantee either);
 *  - at namespace scope write `static __shared__ T x;` (a plain
 *    `__shared__ T x;` there has external linkage and may clash between TUs).
 * Dynamic shared memory (the launch's dynamic_shared bytes) is supported under
 * ONE fixed name and type:
 *     extern __shared__ __align__(16) unsigned char sf_dynamic_shared[];
 *     float* buf = reinterpret_cast<float*>(sf_dynamic_shared);
 * It is a per-OS-thread array of SF_EMU_MAX_DYNAMIC_SHARED bytes (default
 * 48 KiB, CUDA's default limit); larger launches abort.  `extern __shared__`
 * arrays under any other name fail to link (undefined reference).
 *
 * ---------------------------------------------------------------------------
 * WHAT ELSE IS PROVIDED
 * ---------------------------------------------------------------------------
 *  qualifiers: __global__ __device__ __host__ __constant__ __managed__
 *              __grid_constant__ (all empty), __forceinline__ (as in CUDA's
 *              host headers: __inline__ + always_inline), __noinline__,
 *              __launch_bounds__(...) (empty), __align__(n); __restrict__ is
 *              g++'s own.
 *  built-ins:  threadIdx (per fiber), blockIdx, blockDim, gridDim (read-only),
 *              warpSize (32), dim3, uint3 and the usual vector types
 *              (int2..4, uint2..4, float2..4, double2, ...) with make_*.
 *  sync:       __syncthreads, __syncthreads_count/_and/_or, __syncwarp,
 *              __threadfence, __threadfence_block, __threadfence_system.
 *  atomics:    atomicAdd (int, unsigned, unsigned long long, float, double),
 *              atomicSub (int, unsigned), atomicExch (int, unsigned, ull,
 *              float), atomicMin/atomicMax (int, unsigned, long long, ull),
 *              atomicAnd/Or/Xor (int, unsigned, ull), atomicCAS (int,
 *              unsigned, ull, unsigned short), atomicInc/atomicDec (unsigned),
 *              and the *_block / *_system variants.  GCC __atomic builtins,
 *              memory order SF_EMU_ATOMIC_ORDER (default __ATOMIC_RELAXED,
 *              like CUDA's atomics; fences are __threadfence*), safe across
 *              OpenMP threads; float/double via compare-exchange loops.
 *  warp:       __shfl_sync, __shfl_up_sync, __shfl_down_sync, __shfl_xor_sync
 *              (any trivially copyable type of <= 8 bytes, width = power of 2
 *              <= 32), __ballot_sync, __any_sync, __all_sync, __match_any_sync,
 *              __match_all_sync, __reduce_{add,min,max}_sync (int, unsigned),
 *              __reduce_{and,or,xor}_sync (unsigned).
 *  bits:       __popc, __popcll, __ffs, __ffsll, __clz, __clzll, __brev,
 *              __brevll, __mul24, __umul24, __mulhi, __umulhi, __mul64hi,
 *              __umul64hi.
 *  math:       everything of <math.h> (expf, fminf, ...), rsqrtf, rsqrt,
 *              fdividef, sinpif, cospif, sincospif, exp10f (glibc), the fast
 *              intrinsics __expf __exp10f __logf __log2f __log10f __sinf
 *              __cosf __tanf __sincosf __powf __fdividef __saturatef and the
 *              _rn arithmetic (__fadd_rn, __fmul_rn, __fmaf_rn, __frcp_rn,
 *              __fsqrt_rn, __frsqrt_rn, __fdiv_rn, __dadd_rn, ...), which are
 *              the accurate libm functions / IEEE operations here;
 *              conversions __float2int_{rn,rz,rd,ru}, __float2uint_*,
 *              __float2ll_*, __double2int_*, __int2float_rn, __uint2float_rn,
 *              __double2float_rn, __int_as_float, __float_as_int,
 *              __uint_as_float, __float_as_uint, __double_as_longlong,
 *              __longlong_as_double (saturating and NaN -> 0 like CUDA);
 *              min/max overloads for the integer types, float and double
 *              (the same overload set as CUDA, so the same calls are
 *              ambiguous).
 *  misc:       __ldg (plain load), clock64 (ns of steady_clock), __trap.
 *              printf and assert work in kernels.
 *
 * ---------------------------------------------------------------------------
 * NOT SUPPORTED (fails to compile, link or aborts with a message)
 * ---------------------------------------------------------------------------
 *  __activemask() (needs the GPU's convergence state), cooperative groups,
 *  dynamic parallelism (launching from a kernel aborts), textures/surfaces,
 *  half precision types, non-_rn rounding modes (__fadd_rz, ...), spinning on
 *  a value another thread of the same block will write without a barrier in
 *  between (a fiber is never preempted: it spins forever), grid-wide
 *  synchronisation, `extern __shared__` under another name than
 *  sf_dynamic_shared.  Launch configurations CUDA would reject (a zero
 *  dimension, more than 1024 threads per block, block.z > 64, grid.y or
 *  grid.z > 65535) abort.
 *
 * ---------------------------------------------------------------------------
 * TUNING MACROS (define before including)
 * ---------------------------------------------------------------------------
 *  SF_EMU_STACK_SIZE          fiber stack bytes (default 64 KiB); raise it for
 *                             kernels with big local arrays or deep recursion.
 *                             Every stack has a PROT_NONE guard page below it
 *                             (best effort), so an overflow is a SIGSEGV in
 *                             the kernel, not silent corruption.
 *  SF_EMU_MAX_GUARD_PAGES     guard pages process wide (default 16384; each is
 *                             a memory mapping, and vm.max_map_count is
 *                             usually 65530); stacks beyond have none.
 *  SF_EMU_MAX_DYNAMIC_SHARED  bytes of dynamic shared memory (default 49152).
 *  SF_EMU_MIN_PARALLEL_THREADS  launches with fewer CUDA threads in all run
 *                             on the calling thread, without an OpenMP team
 *                             (default 2048: forking costs more than they do).
 *  SF_EMU_ATOMIC_ORDER        memory order of the atomics (__ATOMIC_RELAXED).
 *  SF_EMU_VALGRIND            register fiber stacks with valgrind
 *                             (needs <valgrind/valgrind.h>).
 *
 * ---------------------------------------------------------------------------
 * DEBUGGING A KERNEL
 * ---------------------------------------------------------------------------
 * A kernel is an ordinary C++ function here:
 *     g++ -std=c++17 -g -O0 -include sf_cuda_emu.h -x c++ k.cu driver.cpp
 *     OMP_NUM_THREADS=1 gdb ./a.out
 *     (gdb) break my_kernel          # or  break k.cu:42
 *     (gdb) run
 *     (gdb) info locals
 *     (gdb) p sf_emu::detail::t_tid->x     # threadIdx.x (a macro; with -g3
 *     (gdb) p sf_emu::detail::t_block_idx  # `p threadIdx` works directly)
 *     (gdb) bt                       # a fiber's backtrace ends in fiber_entry
 * Conditional breakpoints on thread/block work as usual, e.g.
 *     break k.cu:42 if sf_emu::detail::t_tid->x == 5
 * Compile without -fopenmp (or run with OMP_NUM_THREADS=1) to see one block
 * at a time.  valgrind works with ucontext fibers; compile with
 * -DSF_EMU_VALGRIND so that every fiber stack is announced with
 * VALGRIND_STACK_REGISTER and memcheck does not mistake switches for stack
 * overflows.  AddressSanitizer does not understand the stack switches (it
 * would need fiber annotations) and may report false positives in fibered
 * kernels; it works on the fast path (uses_barriers == false).
 */
#ifndef SF_CUDA_EMU_H
#define SF_CUDA_EMU_H

#ifdef __CUDACC__
#error "sf_cuda_emu.h emulates CUDA on the CPU for g++; it must not be compiled by nvcc"
#else

#if __cplusplus < 201703L
#error "sf_cuda_emu.h needs C++17 (-std=c++17)"
#endif

#define SF_CUDA_EMU 1

/* Standard headers first: <memory> (shared_ptr_base.h) uses
 * __attribute__((__noinline__)), which the __noinline__ macro below would
 * break; include guards keep later includes of it harmless. */
#include <algorithm>
#include <atomic>
#include <cassert>
#include <chrono>
#include <climits>
#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <limits>
#include <memory>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/mman.h>
#include <ucontext.h>
#include <unistd.h>

#ifdef SF_EMU_VALGRIND
#include <valgrind/valgrind.h>
#endif

#ifndef SF_EMU_STACK_SIZE
#define SF_EMU_STACK_SIZE (64 * 1024)
#endif
#ifndef SF_EMU_MAX_DYNAMIC_SHARED
#define SF_EMU_MAX_DYNAMIC_SHARED (48 * 1024)
#endif
#ifndef SF_EMU_MAX_GUARD_PAGES
#define SF_EMU_MAX_GUARD_PAGES 16384
#endif
#ifndef SF_EMU_MIN_PARALLEL_THREADS
#define SF_EMU_MIN_PARALLEL_THREADS 2048
#endif
#ifndef SF_EMU_ATOMIC_ORDER
#define SF_EMU_ATOMIC_ORDER __ATOMIC_RELAXED
#endif

/* ------------------------------------------------------------------------- */
/* Qualifiers                                                                */
/* ------------------------------------------------------------------------- */
#define __global__
#define __device__
#define __host__
#define __constant__
#define __managed__
#define __grid_constant__
#define __forceinline__ __inline__ __attribute__((always_inline))
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __align__(n) __attribute__((aligned(n)))
#define __shared__ thread_local

/* ------------------------------------------------------------------------- */
/* Vector types and dim3                                                     */
/* ------------------------------------------------------------------------- */
#define SF_EMU_VEC2(T, N, A)                                                   \
    struct __attribute__((aligned(A))) N##2 { T x, y; };                       \
    static inline N##2 make_##N##2(T x, T y) { return N##2{x, y}; }
#define SF_EMU_VEC3(T, N)                                                      \
    struct N##3 { T x, y, z; };                                                \
    static inline N##3 make_##N##3(T x, T y, T z) { return N##3{x, y, z}; }
#define SF_EMU_VEC4(T, N, A)                                                   \
    struct __attribute__((aligned(A))) N##4 { T x, y, z, w; };                 \
    static inline N##4 make_##N##4(T x, T y, T z, T w) { return N##4{x, y, z, w}; }

SF_EMU_VEC2(signed char, char, 2)
SF_EMU_VEC4(signed char, char, 4)
SF_EMU_VEC2(unsigned char, uchar, 2)
SF_EMU_VEC4(unsigned char, uchar, 4)
SF_EMU_VEC2(short, short, 4)
SF_EMU_VEC4(short, short, 8)
SF_EMU_VEC2(unsigned short, ushort, 4)
SF_EMU_VEC4(unsigned short, ushort, 8)
SF_EMU_VEC2(int, int, 8)
SF_EMU_VEC3(int, int)
SF_EMU_VEC4(int, int, 16)
SF_EMU_VEC2(unsigned int, uint, 8)
SF_EMU_VEC3(unsigned int, uint)
SF_EMU_VEC4(unsigned int, uint, 16)
SF_EMU_VEC2(float, float, 8)
SF_EMU_VEC3(float, float)
SF_EMU_VEC4(float, float, 16)
SF_EMU_VEC2(double, double, 16)
SF_EMU_VEC2(long long, longlong, 16)
SF_EMU_VEC2(unsigned long long, ulonglong, 16)
#undef SF_EMU_VEC2
#undef SF_EMU_VEC3
#undef SF_EMU_VEC4

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int vx = 1, unsigned int vy = 1, unsigned int vz = 1) : x(vx), y(vy), z(vz) {}
    constexpr dim3(uint3 v) : x(v.x), y(v.y), z(v.z) {}
    constexpr operator uint3() const { return uint3{x, y, z}; }
};

inline constexpr int warpSize = 32;

/* ------------------------------------------------------------------------- */
/* Emulator state and scheduler                                              */
/* ------------------------------------------------------------------------- */
namespace sf_emu {
namespace detail {

[[noreturn]] inline void fail(const char* what) {
    std::fflush(stdout);
    std::fprintf(stderr, "sf_cuda_emu: %s\n", what);
    std::fflush(stderr);
    std::abort();
}

enum Mode : int { MODE_IDLE = 0, MODE_FAST = 1, MODE_FIBERS = 2 };
enum FiberState : int { F_READY = 0, F_RUNNING, F_BARRIER, F_WARP, F_DONE };
enum Op : int {
    OP_SYNCWARP = 1, OP_BALLOT, OP_ANY, OP_ALL, OP_SHFL_IDX, OP_SHFL_UP, OP_SHFL_DOWN, OP_SHFL_XOR,
    OP_MATCH_ANY, OP_MATCH_ALL, OP_RED_ADD, OP_RED_MIN_S, OP_RED_MAX_S, OP_RED_MIN_U, OP_RED_MAX_U,
    OP_RED_AND, OP_RED_OR, OP_RED_XOR
};

inline const char* op_name(int op) {
    static const char* const names[] = {"?", "__syncwarp", "__ballot_sync", "__any_sync", "__all_sync",
                                        "__shfl_sync", "__shfl_up_sync", "__shfl_down_sync",
                                        "__shfl_xor_sync", "__match_any_sync", "__match_all_sync",
                                        "__reduce_add_sync", "__reduce_min_sync", "__reduce_max_sync",
                                        "__reduce_min_sync", "__reduce_max_sync", "__reduce_and_sync",
                                        "__reduce_or_sync", "__reduce_xor_sync"};
    return (op >= 0 && op <= OP_RED_XOR) ? names[op] : "?";
}

/* One lane's operand and result of a warp collective. */
struct Slot {
    int op = 0;
    unsigned mask = 0;
    int arg = 0;
    int width = 32;
    uint64_t in = 0;
    uint64_t out = 0;
};

struct Fiber {
    ucontext_t ctx;
    uint3 tid{0, 0, 0};
    int state = F_DONE;
    Slot slot;
};

struct WarpState {
    unsigned live = 0;     // lanes that exist and have not returned
    unsigned waiting = 0;  // lanes blocked in a warp collective
};

struct Pool {
    int mode = MODE_IDLE;
    // the launch
    void (*fn)(void*) = nullptr;
    void* fn_ctx = nullptr;
    dim3 block_dim, grid_dim;
    unsigned nthreads = 0;
    // fibers (grown on demand, never shrunk; stacks live in `regions`)
    std::vector<std::unique_ptr<Fiber>> fibers;
    std::vector<Fiber*> fib;  // raw pointers, fib[i] == fibers[i].get()
    std::vector<std::pair<void*, size_t>> regions;
    std::vector<unsigned> valgrind_ids;
    bool guard_pages = true;
    ucontext_t sched_ctx;
    // the block being run
    int cur = -1;
    int live = 0;
    int bar_count = 0, bar_true = 0;  // arrivals at __syncthreads, with a true predicate
    int res_count = 0, res_true = 0;  // the same, of the barrier completed last
    std::vector<int> runq;            // FIFO ring of runnable fibers
    int rq_head = 0, rq_size = 0;
    std::vector<WarpState> warps;
    Slot solo;  // collectives of a one-thread block on the fast path

    Pool() = default;
    Pool(const Pool&) = delete;
    Pool& operator=(const Pool&) = delete;
    ~Pool() {
#ifdef SF_EMU_VALGRIND
        for (unsigned id : valgrind_ids) VALGRIND_STACK_DEREGISTER(id);
#endif
        for (auto& r : regions) munmap(r.first, r.second);
    }

    void push(int i) {
        int cap = (int)runq.size();
        runq[(rq_head + rq_size) % cap] = i;
        rq_size++;
    }
    int pop() {
        if (rq_size == 0) return -1;
        int i = runq[rq_head];
        rq_head = (rq_head + 1) % (int)runq.size();
        rq_size--;
        return i;
    }
};

/* Per OS thread.  All trivially initialised, so no TLS wrapper calls. */
inline const uint3 zero_uint3{0, 0, 0};
inline thread_local Pool* t_pool = nullptr;
inline thread_local const uint3* t_tid = &zero_uint3;
inline thread_local uint3 t_block_idx{0, 0, 0};
inline thread_local dim3 t_block_dim{1, 1, 1};
inline thread_local dim3 t_grid_dim{1, 1, 1};

inline Pool& pool() {
    if (!t_pool) {
        static thread_local std::unique_ptr<Pool> owner;  // frees the stacks at thread exit
        owner.reset(new Pool());
        t_pool = owner.get();
    }
    return *t_pool;
}

inline void thread_exit(Pool& p, int self);

/* Guard pages left to place, process wide. */
inline std::atomic<long> g_guard_budget{(long)(SF_EMU_MAX_GUARD_PAGES)};

/* Entry point of every fiber: run the body for the CUDA thread this fiber is,
 * park in thread_exit, and start over when resumed for the next block. */
inline void fiber_entry() {
    Pool* p = t_pool;
    const int self = p->cur;
    for (;;) {
        p->fn(p->fn_ctx);
        thread_exit(*p, self);
    }
}

inline void grow_fibers(Pool& p, unsigned n) {
    if (p.fibers.size() >= n) return;
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t stack = ((size_t)(SF_EMU_STACK_SIZE) + page - 1) / page * page;
    const size_t per = stack + page;  // guard page below each stack
    const size_t count = n - p.fibers.size();
    void* mem = mmap(nullptr, per * count, PROT_READ | PROT_WRITE,
                     MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_STACK, -1, 0);
    if (mem == MAP_FAILED) fail("mmap of fiber stacks failed (lower SF_EMU_STACK_SIZE?)");
    p.regions.emplace_back(mem, per * count);
    for (size_t k = 0; k < count; ++k) {
        char* base = static_cast<char*>(mem) + k * per;
        // best effort: each guard page costs a memory mapping (vm.max_map_count)
        if (p.guard_pages && (g_guard_budget.fetch_sub(1, std::memory_order_relaxed) <= 0 ||
                              mprotect(base, page, PROT_NONE) != 0))
            p.guard_pages = false;
        std::unique_ptr<Fiber> f(new Fiber());
        if (getcontext(&f->ctx) != 0) fail("getcontext failed");
        f->ctx.uc_stack.ss_sp = base + page;
        f->ctx.uc_stack.ss_size = stack;
        f->ctx.uc_link = nullptr;
        makecontext(&f->ctx, (void (*)())fiber_entry, 0);
#ifdef SF_EMU_VALGRIND
        p.valgrind_ids.push_back(VALGRIND_STACK_REGISTER(base + page, base + per));
#endif
        p.fib.push_back(f.get());
        p.fibers.push_back(std::move(f));
    }
}

[[noreturn]] inline void deadlock(Pool& p) {
    std::fflush(stdout);
    int at_bar = 0, at_warp = 0;
    for (unsigned i = 0; i < p.nthreads; ++i) {
        at_bar += p.fib[i]->state == F_BARRIER;
        at_warp += p.fib[i]->state == F_WARP;
    }
    std::fprintf(stderr,
                 "sf_cuda_emu: deadlock in block (%u,%u,%u): %d live threads, %d wait in __syncthreads, "
                 "%d in warp collectives\n",
                 t_block_idx.x, t_block_idx.y, t_block_idx.z, p.live, at_bar, at_warp);
    for (size_t w = 0; w < p.warps.size(); ++w) {
        const WarpState& ws = p.warps[w];
        if (!ws.waiting) continue;
        for (int l = 0; l < 32; ++l)
            if (ws.waiting >> l & 1u) {
                const Slot& s = p.fib[w * 32 + l]->slot;
                std::fprintf(stderr, "  warp %zu: lanes 0x%08x (live 0x%08x) wait in %s with mask 0x%08x\n", w,
                             ws.waiting, ws.live, op_name(s.op), s.mask);
                break;
            }
    }
    std::fflush(stderr);
    std::abort();
}

/* The running fiber `self` gives up the CPU (its state is already set): run
 * the next runnable fiber, or go back to the block loop when all returned. */
inline void switch_away(Pool& p, int self) {
    Fiber* me = p.fib[self];
    const int next = p.pop();
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    if (next < 0) {
        if (p.live == 0) {
            swapcontext(&me->ctx, &p.sched_ctx);
            __atomic_signal_fence(__ATOMIC_SEQ_CST);
            return;
        }
        deadlock(p);
    }
    Fiber* nf = p.fib[next];
    nf->state = F_RUNNING;
    p.cur = next;
    t_tid = &nf->tid;
    swapcontext(&me->ctx, &nf->ctx);
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

inline void release_barrier(Pool& p) {
    p.res_count = p.bar_count;
    p.res_true = p.bar_true;
    p.bar_count = p.bar_true = 0;
    for (unsigned i = 0; i < p.nthreads; ++i) {
        Fiber* f = p.fib[i];
        if (f->state == F_BARRIER) {
            f->state = F_READY;
            p.push((int)i);
        }
    }
}

/* Compute the results of a warp collective for the lanes in `need`;
 * lanes[l] is lane l's slot (null where the lane does not take part). */
inline void compute_collective(Slot* const* lanes, unsigned need, int lead) {
    const Slot& t = *lanes[lead];
    for (int l = 0; l < 32; ++l) {
        if (!(need >> l & 1u)) continue;
        const Slot& s = *lanes[l];
        if (s.op != t.op || s.mask != t.mask) {
            char msg[256];
            std::snprintf(msg, sizeof msg,
                          "divergent warp collective: lane %d is in %s (mask 0x%08x) while lane %d is in %s "
                          "(mask 0x%08x)",
                          lead, op_name(t.op), t.mask, l, op_name(s.op), s.mask);
            fail(msg);
        }
    }
    auto each = [&](auto&& f) {
        for (int l = 0; l < 32; ++l)
            if (need >> l & 1u) f(l, *lanes[l]);
    };
    switch (t.op) {
    case OP_SYNCWARP: break;
    case OP_BALLOT:
    case OP_ANY:
    case OP_ALL: {
        unsigned b = 0;
        each([&](int l, Slot& s) { b |= (s.in != 0 ? 1u : 0u) << l; });
        const uint64_t r = t.op == OP_BALLOT ? b : t.op == OP_ANY ? (b != 0) : (b == need);
        each([&](int, Slot& s) { s.out = r; });
        break;
    }
    case OP_SHFL_IDX:
    case OP_SHFL_UP:
    case OP_SHFL_DOWN:
    case OP_SHFL_XOR:
        each([&](int l, Slot& s) {
            const int w = s.width;
            if (w <= 0 || w > 32 || (w & (w - 1))) fail("shuffle width must be a power of 2 in [1, 32]");
            const int seg = l & ~(w - 1);
            int src = l;
            switch (s.op) {
            case OP_SHFL_IDX: src = seg | (s.arg & (w - 1)); break;
            case OP_SHFL_UP: src = ((l & (w - 1)) >= s.arg) ? l - s.arg : l; break;
            case OP_SHFL_DOWN: src = ((l & (w - 1)) + s.arg < w) ? l + s.arg : l; break;
            default: src = l ^ s.arg; if (src < 0 || src >= seg + w) src = l; break;
            }
            if (s.arg < 0 && s.op != OP_SHFL_IDX && s.op != OP_SHFL_XOR) src = l;
            s.out = (src >= 0 && src < 32 && (need >> src & 1u)) ? lanes[src]->in : s.in;
        });
        break;
    case OP_MATCH_ANY:
        each([&](int, Slot& s) {
            unsigned m = 0;
            each([&](int k, Slot& o) { m |= (o.in == s.in ? 1u : 0u) << k; });
            s.out = m;
        });
        break;
    case OP_MATCH_ALL: {
        bool all = true;
        each([&](int, Slot& s) { all = all && s.in == t.in; });
        each([&](int, Slot& s) { s.out = all ? need : 0u; });
        break;
    }
    default: {
        uint32_t r = (uint32_t)t.in;
        each([&](int l, Slot& s) {
            if (l == lead) return;
            const uint32_t v = (uint32_t)s.in;
            switch (t.op) {
            case OP_RED_ADD: r += v; break;
            case OP_RED_MIN_S: r = (uint32_t)std::min((int32_t)r, (int32_t)v); break;
            case OP_RED_MAX_S: r = (uint32_t)std::max((int32_t)r, (int32_t)v); break;
            case OP_RED_MIN_U: r = std::min(r, v); break;
            case OP_RED_MAX_U: r = std::max(r, v); break;
            case OP_RED_AND: r &= v; break;
            case OP_RED_OR: r |= v; break;
            case OP_RED_XOR: r ^= v; break;
            default: fail("unknown warp collective");
            }
        });
        each([&](int, Slot& s) { s.out = r; });
        break;
    }
    }
}

/* Lanes `need` of warp w are all waiting: compute, and make them runnable
 * (except `running`, the fiber that is executing and simply continues). */
inline void resolve_warp(Pool& p, int w, unsigned need, int lead_lane, int running) {
    Slot* lanes[32];
    for (int l = 0; l < 32; ++l) {
        const unsigned i = (unsigned)(w * 32 + l);
        lanes[l] = (i < p.nthreads) ? &p.fib[i]->slot : nullptr;
    }
    compute_collective(lanes, need, lead_lane);
    p.warps[w].waiting &= ~need;
    for (int l = 0; l < 32; ++l) {
        const int i = w * 32 + l;
        if ((need >> l & 1u) && i != running) {
            p.fib[i]->state = F_READY;
            p.push(i);
        }
    }
}

/* After lanes returned: complete any warp collective now fully arrived. */
inline void recheck_warp(Pool& p, int w) {
    WarpState& ws = p.warps[w];
    bool again = true;
    while (again && ws.waiting) {
        again = false;
        for (int l = 0; l < 32; ++l) {
            if (!(ws.waiting >> l & 1u)) continue;
            const unsigned need = p.fib[w * 32 + l]->slot.mask & ws.live;
            if ((ws.waiting & need) == need) {
                resolve_warp(p, w, need | (1u << l), l, -1);
                again = true;
                break;
            }
        }
    }
}

inline void thread_exit(Pool& p, int self) {
    Fiber* me = p.fib[self];
    me->state = F_DONE;
    p.live--;
    const int w = self >> 5;
    p.warps[w].live &= ~(1u << (self & 31));
    if (p.warps[w].waiting) recheck_warp(p, w);
    if (p.bar_count > 0 && p.bar_count == p.live) release_barrier(p);
    switch_away(p, self);
}

inline Pool& active_pool(const char* what) {
    Pool* p = t_pool;
    if (!p || p->mode == MODE_IDLE) {
        char msg[160];
        std::snprintf(msg, sizeof msg, "%s called outside a kernel launch", what);
        fail(msg);
    }
    return *p;
}

[[noreturn]] inline void needs_barriers(const char* what, const Pool& p) {
    char msg[320];
    std::snprintf(msg, sizeof msg,
                  "%s called in a kernel launched with uses_barriers=false (block of %u threads): launch it "
                  "with uses_barriers=true",
                  what, p.nthreads);
    fail(msg);
}

/* __syncthreads*: returns the number of arrivals and of true predicates. */
inline void block_barrier(int pred, int* count, int* ntrue) {
    Pool& p = active_pool("__syncthreads()");
    if (p.mode != MODE_FIBERS) {
        if (p.nthreads != 1) needs_barriers("__syncthreads()", p);
        *count = 1;
        *ntrue = pred != 0;
        return;
    }
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    const int self = p.cur;
    p.bar_count++;
    p.bar_true += pred != 0;
    if (p.bar_count == p.live) {
        release_barrier(p);
    } else {
        p.fib[self]->state = F_BARRIER;
        switch_away(p, self);
    }
    *count = p.res_count;
    *ntrue = p.res_true;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
}

inline uint64_t warp_collective(int op, unsigned mask, uint64_t in, int arg = 0, int width = 32) {
    Pool& p = active_pool(op_name(op));
    if (p.mode != MODE_FIBERS) {
        if (p.nthreads != 1) needs_barriers(op_name(op), p);
        if (!(mask & 1u)) fail("warp collective: the calling lane is not in mask");
        Slot* lanes[32] = {nullptr};
        p.solo = Slot{op, mask, arg, width, in, 0};
        lanes[0] = &p.solo;
        compute_collective(lanes, 1u, 0);
        return p.solo.out;
    }
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    const int self = p.cur;
    const int w = self >> 5, lane = self & 31;
    Fiber* me = p.fib[self];
    if (!(mask >> lane & 1u)) {
        char msg[160];
        std::snprintf(msg, sizeof msg, "%s: calling lane %d is not in mask 0x%08x", op_name(op), lane, mask);
        fail(msg);
    }
    me->slot.op = op;
    me->slot.mask = mask;
    me->slot.arg = arg;
    me->slot.width = width;
    me->slot.in = in;
    WarpState& ws = p.warps[w];
    ws.waiting |= 1u << lane;
    const unsigned need = mask & ws.live;
    if ((ws.waiting & need) == need) {
        resolve_warp(p, w, need, lane, self);
    } else {
        me->state = F_WARP;
        switch_away(p, self);
    }
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    return me->slot.out;
}

template <class T>
inline uint64_t to_bits(const T& v) {
    static_assert(std::is_trivially_copyable<T>::value && sizeof(T) <= 8,
                  "sf_cuda_emu: warp shuffles/matches support trivially copyable types of at most 8 bytes");
    uint64_t b = 0;
    std::memcpy(&b, &v, sizeof(T));
    return b;
}
template <class T>
inline T from_bits(uint64_t b) {
    T v;
    std::memcpy(&v, &b, sizeof(T));
    return v;
}

/* Prepare this OS thread for a launch. */
inline Pool& enter(dim3 grid, dim3 block, bool fibers, void (*fn)(void*), void* ctx) {
    Pool& p = pool();
    if (p.mode != MODE_IDLE) fail("kernel launch from inside a kernel (dynamic parallelism) is not supported");
    p.fn = fn;
    p.fn_ctx = ctx;
    p.block_dim = block;
    p.grid_dim = grid;
    p.nthreads = block.x * block.y * block.z;
    t_block_dim = block;
    t_grid_dim = grid;
    if (fibers) {
        grow_fibers(p, p.nthreads);
        for (unsigned i = 0; i < p.nthreads; ++i)
            p.fib[i]->tid = uint3{i % block.x, (i / block.x) % block.y, i / (block.x * block.y)};
        if (p.runq.size() < p.nthreads) p.runq.resize(p.nthreads);
        p.warps.assign((p.nthreads + 31) / 32, WarpState{});
        p.mode = MODE_FIBERS;
    } else {
        p.mode = MODE_FAST;
    }
    return p;
}

inline void leave(Pool& p) {
    p.mode = MODE_IDLE;
    p.fn = nullptr;
    p.fn_ctx = nullptr;
    t_tid = &zero_uint3;
}

inline void set_block(long long b) {
    const dim3 g = t_grid_dim;
    t_block_idx = uint3{(unsigned)(b % g.x), (unsigned)((b / g.x) % g.y), (unsigned)(b / ((long long)g.x * g.y))};
}

/* Run the current block with one fiber per CUDA thread. */
inline void run_block_fibers(Pool& p) {
    const unsigned n = p.nthreads;
    p.live = (int)n;
    p.bar_count = p.bar_true = 0;
    p.rq_head = 0;
    p.rq_size = 0;
    for (unsigned i = 0; i < n; ++i) {
        p.fib[i]->state = F_READY;
        p.push((int)i);
    }
    for (size_t w = 0; w < p.warps.size(); ++w) {
        const unsigned lanes = std::min(32u, n - (unsigned)w * 32u);
        p.warps[w].live = lanes == 32 ? 0xffffffffu : ((1u << lanes) - 1u);
        p.warps[w].waiting = 0;
    }
    const int first = p.pop();
    Fiber* f = p.fib[first];
    f->state = F_RUNNING;
    p.cur = first;
    t_tid = &f->tid;
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    swapcontext(&p.sched_ctx, &f->ctx);  // back here once every thread returned
    __atomic_signal_fence(__ATOMIC_SEQ_CST);
    p.cur = -1;
    t_tid = &zero_uint3;
}

template <class Fn>
void trampoline(void* c) {
    (*static_cast<Fn*>(c))();
}

inline void check_config(dim3 grid, dim3 block, size_t dynamic_shared) {
    char msg[256];
    if (!grid.x || !grid.y || !grid.z || !block.x || !block.y || !block.z) {
        std::snprintf(msg, sizeof msg, "invalid launch configuration: grid (%u,%u,%u), block (%u,%u,%u)", grid.x,
                      grid.y, grid.z, block.x, block.y, block.z);
        fail(msg);
    }
    if ((unsigned long long)block.x * block.y * block.z > 1024ull || block.x > 1024u || block.y > 1024u ||
        block.z > 64u) {
        std::snprintf(msg, sizeof msg, "invalid block (%u,%u,%u): CUDA allows at most 1024 threads (z <= 64)",
                      block.x, block.y, block.z);
        fail(msg);
    }
    if (grid.y > 65535u || grid.z > 65535u || grid.x > 2147483647u) {
        std::snprintf(msg, sizeof msg, "invalid grid (%u,%u,%u): y and z must be <= 65535", grid.x, grid.y,
                      grid.z);
        fail(msg);
    }
    if (dynamic_shared > (size_t)(SF_EMU_MAX_DYNAMIC_SHARED)) {
        std::snprintf(msg, sizeof msg, "%zu bytes of dynamic shared memory requested, SF_EMU_MAX_DYNAMIC_SHARED is %zu",
                      dynamic_shared, (size_t)(SF_EMU_MAX_DYNAMIC_SHARED));
        fail(msg);
    }
}

inline const uint3& thread_idx() { return *t_tid; }
inline const uint3& block_idx() { return t_block_idx; }
inline const dim3& block_dim() { return t_block_dim; }
inline const dim3& grid_dim() { return t_grid_dim; }

}  // namespace detail

/* threadIdx of the calling CUDA thread. */
inline const uint3& current_thread() { return *detail::t_tid; }

/* Run body() once for every thread of a grid x block launch.
 * uses_barriers: the kernel calls __syncthreads or warp collectives
 * (fibers); false runs the threads of a block one after another. */
template <class F>
void launch(dim3 grid, dim3 block, size_t dynamic_shared, bool uses_barriers, F&& body) {
    using Fn = std::remove_reference_t<F>;
    detail::check_config(grid, block, dynamic_shared);
    const long long nblocks = (long long)grid.x * grid.y * grid.z;
    const unsigned nthreads = block.x * block.y * block.z;
    const bool fibers = uses_barriers && nthreads > 1;
    void* ctx = const_cast<void*>(static_cast<const void*>(std::addressof(body)));
    void (*fn)(void*) = &detail::trampoline<Fn>;
#ifdef _OPENMP
#pragma omp parallel if (nblocks > 1 && (long long)nthreads * nblocks >= (long long)(SF_EMU_MIN_PARALLEL_THREADS))
#endif
    {
        detail::Pool& p = detail::enter(grid, block, fibers, fn, ctx);
#ifdef _OPENMP
#pragma omp for schedule(dynamic, 1)
#endif
        for (long long b = 0; b < nblocks; ++b) {
            detail::set_block(b);
            if (fibers) {
                detail::run_block_fibers(p);
            } else {
                uint3 tid{0, 0, 0};
                detail::t_tid = &tid;
                for (tid.z = 0; tid.z < block.z; ++tid.z)
                    for (tid.y = 0; tid.y < block.y; ++tid.y)
                        for (tid.x = 0; tid.x < block.x; ++tid.x) body();
                detail::t_tid = &detail::zero_uint3;
            }
        }
        detail::leave(p);
    }
}

}  // namespace sf_emu

namespace sf_emu {
namespace detail {
/* The launch macros: arguments evaluated once and copied, like a real launch. */
template <class K, class... A>
void launch_kernel(dim3 grid, dim3 block, size_t dynamic_shared, K&& kernel, bool uses_barriers, A&&... args) {
    auto packed = std::make_tuple(std::forward<A>(args)...);
    ::sf_emu::launch(grid, block, dynamic_shared, uses_barriers, [&kernel, &packed] { std::apply(kernel, packed); });
}
}  // namespace detail
}  // namespace sf_emu

/* SF_EMU_LAUNCH(kernel, grid, block, uses_barriers, args...)
 * SF_EMU_LAUNCH_SHARED(kernel, grid, block, dynamic_shared, uses_barriers, args...)
 * kernel may be any callable name, e.g. a template instance (my_kernel<4>);
 * write grid and block as dim3(...) or plain integers, not {..} (macro commas). */
#define SF_EMU_LAUNCH_SHARED(kernel, grid, block, dynamic_shared, ...)                                 \
    ::sf_emu::detail::launch_kernel(                                                                  \
        (grid), (block), (dynamic_shared), [&](const auto&... sf_emu_a_) { kernel(sf_emu_a_...); }, \
        __VA_ARGS__)
#define SF_EMU_LAUNCH(kernel, grid, block, ...) SF_EMU_LAUNCH_SHARED(kernel, grid, block, 0, __VA_ARGS__)

/* ------------------------------------------------------------------------- */
/* Built-in variables                                                        */
/* ------------------------------------------------------------------------- */
#define threadIdx (::sf_emu::detail::thread_idx())
#define blockIdx (::sf_emu::detail::block_idx())
#define blockDim (::sf_emu::detail::block_dim())
#define gridDim (::sf_emu::detail::grid_dim())

/* Dynamic shared memory: see the top of this file. */
alignas(16) inline thread_local unsigned char sf_dynamic_shared[SF_EMU_MAX_DYNAMIC_SHARED];

/* ------------------------------------------------------------------------- */
/* Synchronisation                                                           */
/* ------------------------------------------------------------------------- */
static inline void __syncthreads() {
    int c, t;
    ::sf_emu::detail::block_barrier(0, &c, &t);
}
static inline int __syncthreads_count(int pred) {
    int c, t;
    ::sf_emu::detail::block_barrier(pred, &c, &t);
    return t;
}
static inline int __syncthreads_and(int pred) {
    int c, t;
    ::sf_emu::detail::block_barrier(pred, &c, &t);
    return t == c;
}
static inline int __syncthreads_or(int pred) {
    int c, t;
    ::sf_emu::detail::block_barrier(pred, &c, &t);
    return t != 0;
}
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
    ::sf_emu::detail::warp_collective(::sf_emu::detail::OP_SYNCWARP, mask, 0);
}
static inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
static inline void __threadfence_system() { std::atomic_thread_fence(std::memory_order_seq_cst); }

/* ------------------------------------------------------------------------- */
/* Warp collectives                                                          */
/* ------------------------------------------------------------------------- */
static inline unsigned __ballot_sync(unsigned mask, int pred) {
    return (unsigned)::sf_emu::detail::warp_collective(::sf_emu::detail::OP_BALLOT, mask, pred != 0);
}
static inline int __any_sync(unsigned mask, int pred) {
    return (int)::sf_emu::detail::warp_collective(::sf_emu::detail::OP_ANY, mask, pred != 0);
}
static inline int __all_sync(unsigned mask, int pred) {
    return (int)::sf_emu::detail::warp_collective(::sf_emu::detail::OP_ALL, mask, pred != 0);
}
template <class T>
static inline T __shfl_sync(unsigned mask, T var, int srcLane, int width = warpSize) {
    namespace d = ::sf_emu::detail;
    return d::from_bits<T>(d::warp_collective(d::OP_SHFL_IDX, mask, d::to_bits(var), srcLane, width));
}
template <class T>
static inline T __shfl_up_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    namespace d = ::sf_emu::detail;
    return d::from_bits<T>(d::warp_collective(d::OP_SHFL_UP, mask, d::to_bits(var), (int)delta, width));
}
template <class T>
static inline T __shfl_down_sync(unsigned mask, T var, unsigned delta, int width = warpSize) {
    namespace d = ::sf_emu::detail;
    return d::from_bits<T>(d::warp_collective(d::OP_SHFL_DOWN, mask, d::to_bits(var), (int)delta, width));
}
template <class T>
static inline T __shfl_xor_sync(unsigned mask, T var, int laneMask, int width = warpSize) {
    namespace d = ::sf_emu::detail;
    return d::from_bits<T>(d::warp_collective(d::OP_SHFL_XOR, mask, d::to_bits(var), laneMask, width));
}
template <class T>
static inline unsigned __match_any_sync(unsigned mask, T value) {
    namespace d = ::sf_emu::detail;
    return (unsigned)d::warp_collective(d::OP_MATCH_ANY, mask, d::to_bits(value));
}
template <class T>
static inline unsigned __match_all_sync(unsigned mask, T value, int* pred) {
    namespace d = ::sf_emu::detail;
    const unsigned r = (unsigned)d::warp_collective(d::OP_MATCH_ALL, mask, d::to_bits(value));
    *pred = r != 0;
    return r;
}
#define SF_EMU_REDUCE(name, T, op)                                                               \
    static inline T name(unsigned mask, T value) {                                               \
        return (T)(uint32_t)::sf_emu::detail::warp_collective(::sf_emu::detail::op, mask,        \
                                                              (uint64_t)(uint32_t)value);        \
    }
SF_EMU_REDUCE(__reduce_add_sync, unsigned, OP_RED_ADD)
SF_EMU_REDUCE(__reduce_add_sync, int, OP_RED_ADD)
SF_EMU_REDUCE(__reduce_min_sync, unsigned, OP_RED_MIN_U)
SF_EMU_REDUCE(__reduce_min_sync, int, OP_RED_MIN_S)
SF_EMU_REDUCE(__reduce_max_sync, unsigned, OP_RED_MAX_U)
SF_EMU_REDUCE(__reduce_max_sync, int, OP_RED_MAX_S)
SF_EMU_REDUCE(__reduce_and_sync, unsigned, OP_RED_AND)
SF_EMU_REDUCE(__reduce_or_sync, unsigned, OP_RED_OR)
SF_EMU_REDUCE(__reduce_xor_sync, unsigned, OP_RED_XOR)
#undef SF_EMU_REDUCE

/* ------------------------------------------------------------------------- */
/* Atomics                                                                   */
/* ------------------------------------------------------------------------- */
namespace sf_emu {
namespace detail {
template <class T, class Op>
inline T cas_loop(T* a, Op op) {
    T old;
    __atomic_load(a, &old, __ATOMIC_RELAXED);
    T desired;
    do {
        desired = op(old);
    } while (!__atomic_compare_exchange(a, &old, &desired, true, SF_EMU_ATOMIC_ORDER, __ATOMIC_RELAXED));
    return old;
}
}  // namespace detail
}  // namespace sf_emu

#define SF_EMU_FETCH(name, T, builtin) \
    static inline T name(T* a, T v) { return builtin(a, v, SF_EMU_ATOMIC_ORDER); }
SF_EMU_FETCH(atomicAdd, int, __atomic_fetch_add)
SF_EMU_FETCH(atomicAdd, unsigned int, __atomic_fetch_add)
SF_EMU_FETCH(atomicAdd, unsigned long long, __atomic_fetch_add)
SF_EMU_FETCH(atomicSub, int, __atomic_fetch_sub)
SF_EMU_FETCH(atomicSub, unsigned int, __atomic_fetch_sub)
SF_EMU_FETCH(atomicAnd, int, __atomic_fetch_and)
SF_EMU_FETCH(atomicAnd, unsigned int, __atomic_fetch_and)
SF_EMU_FETCH(atomicAnd, unsigned long long, __atomic_fetch_and)
SF_EMU_FETCH(atomicOr, int, __atomic_fetch_or)
SF_EMU_FETCH(atomicOr, unsigned int, __atomic_fetch_or)
SF_EMU_FETCH(atomicOr, unsigned long long, __atomic_fetch_or)
SF_EMU_FETCH(atomicXor, int, __atomic_fetch_xor)
SF_EMU_FETCH(atomicXor, unsigned int, __atomic_fetch_xor)
SF_EMU_FETCH(atomicXor, unsigned long long, __atomic_fetch_xor)
SF_EMU_FETCH(atomicExch, int, __atomic_exchange_n)
SF_EMU_FETCH(atomicExch, unsigned int, __atomic_exchange_n)
SF_EMU_FETCH(atomicExch, unsigned long long, __atomic_exchange_n)
#undef SF_EMU_FETCH

static inline float atomicAdd(float* a, float v) {
    return ::sf_emu::detail::cas_loop(a, [v](float o) { return o + v; });
}
static inline double atomicAdd(double* a, double v) {
    return ::sf_emu::detail::cas_loop(a, [v](double o) { return o + v; });
}
static inline float atomicExch(float* a, float v) {
    float old;
    __atomic_exchange(a, &v, &old, SF_EMU_ATOMIC_ORDER);
    return old;
}
#define SF_EMU_MINMAX(T)                                                                                      \
    static inline T atomicMin(T* a, T v) {                                                                    \
        return ::sf_emu::detail::cas_loop(a, [v](T o) { return v < o ? v : o; });                           \
    }                                                                                                         \
    static inline T atomicMax(T* a, T v) {                                                                    \
        return ::sf_emu::detail::cas_loop(a, [v](T o) { return v > o ? v : o; });                           \
    }
SF_EMU_MINMAX(int)
SF_EMU_MINMAX(unsigned int)
SF_EMU_MINMAX(long long)
SF_EMU_MINMAX(unsigned long long)
#undef SF_EMU_MINMAX

#define SF_EMU_CAS(T)                                                                                         \
    static inline T atomicCAS(T* a, T compare, T val) {                                                       \
        __atomic_compare_exchange_n(a, &compare, val, false, SF_EMU_ATOMIC_ORDER, __ATOMIC_RELAXED);          \
        return compare; /* the old value, whether or not the swap happened */                                 \
    }
SF_EMU_CAS(int)
SF_EMU_CAS(unsigned int)
SF_EMU_CAS(unsigned long long)
SF_EMU_CAS(unsigned short)
#undef SF_EMU_CAS

static inline unsigned atomicInc(unsigned* a, unsigned v) {
    return ::sf_emu::detail::cas_loop(a, [v](unsigned o) { return o >= v ? 0u : o + 1u; });
}
static inline unsigned atomicDec(unsigned* a, unsigned v) {
    return ::sf_emu::detail::cas_loop(a, [v](unsigned o) { return (o == 0u || o > v) ? v : o - 1u; });
}

#define SF_EMU_SCOPED(name)                                                           \
    template <class... A>                                                             \
    static inline auto name##_block(A... a) -> decltype(name(a...)) { return name(a...); } \
    template <class... A>                                                             \
    static inline auto name##_system(A... a) -> decltype(name(a...)) { return name(a...); }
SF_EMU_SCOPED(atomicAdd)
SF_EMU_SCOPED(atomicSub)
SF_EMU_SCOPED(atomicExch)
SF_EMU_SCOPED(atomicMin)
SF_EMU_SCOPED(atomicMax)
SF_EMU_SCOPED(atomicAnd)
SF_EMU_SCOPED(atomicOr)
SF_EMU_SCOPED(atomicXor)
SF_EMU_SCOPED(atomicCAS)
SF_EMU_SCOPED(atomicInc)
SF_EMU_SCOPED(atomicDec)
#undef SF_EMU_SCOPED

/* ------------------------------------------------------------------------- */
/* Integer intrinsics                                                        */
/* ------------------------------------------------------------------------- */
static inline int __popc(unsigned int x) { return __builtin_popcount(x); }
static inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
static inline int __ffsll(long long x) { return __builtin_ffsll(x); }
static inline int __clz(int x) { return x == 0 ? 32 : __builtin_clz((unsigned)x); }
static inline int __clzll(long long x) { return x == 0 ? 64 : __builtin_clzll((unsigned long long)x); }
static inline unsigned int __brev(unsigned int x) {
    x = ((x >> 1) & 0x55555555u) | ((x & 0x55555555u) << 1);
    x = ((x >> 2) & 0x33333333u) | ((x & 0x33333333u) << 2);
    x = ((x >> 4) & 0x0f0f0f0fu) | ((x & 0x0f0f0f0fu) << 4);
    return __builtin_bswap32(x);
}
static inline unsigned long long __brevll(unsigned long long x) {
    return ((unsigned long long)__brev((unsigned)x) << 32) | __brev((unsigned)(x >> 32));
}
static inline int __mul24(int a, int b) {
    return (int)((long long)((a << 8) >> 8) * (long long)((b << 8) >> 8));
}
static inline unsigned __umul24(unsigned a, unsigned b) { return (a & 0xffffffu) * (b & 0xffffffu); }
static inline int __mulhi(int a, int b) { return (int)(((long long)a * b) >> 32); }
static inline unsigned __umulhi(unsigned a, unsigned b) { return (unsigned)(((unsigned long long)a * b) >> 32); }
__extension__ typedef __int128 sf_emu_int128_;
__extension__ typedef unsigned __int128 sf_emu_uint128_;
static inline long long __mul64hi(long long a, long long b) { return (long long)(((sf_emu_int128_)a * b) >> 64); }
static inline unsigned long long __umul64hi(unsigned long long a, unsigned long long b) {
    return (unsigned long long)(((sf_emu_uint128_)a * b) >> 64);
}

/* ------------------------------------------------------------------------- */
/* Math                                                                      */
/* ------------------------------------------------------------------------- */
static inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
static inline double rsqrt(double x) { return 1.0 / sqrt(x); }
static inline float fdividef(float a, float b) { return a / b; }
static inline float sinpif(float x) { return (float)sin(M_PI * (double)x); }
static inline float cospif(float x) { return (float)cos(M_PI * (double)x); }
static inline void sincospif(float x, float* s, float* c) {
    *s = sinpif(x);
    *c = cospif(x);
}
/* glibc already declares (but does not export) __expf, __sinf, ...: macros. */
#define __expf(x) expf(x)
#define __exp10f(x) exp10f(x)
#define __logf(x) logf(x)
#define __log2f(x) log2f(x)
#define __log10f(x) log10f(x)
#define __sinf(x) sinf(x)
#define __cosf(x) cosf(x)
#define __tanf(x) tanf(x)
#define __sincosf(x, s, c) sincosf((x), (s), (c))
#define __powf(a, b) powf((a), (b))
static inline float __fdividef(float a, float b) { return a / b; }
static inline float __saturatef(float x) { return x > 0.0f ? (x < 1.0f ? x : 1.0f) : 0.0f; /* NaN -> 0 */ }
static inline float __fadd_rn(float a, float b) { return a + b; }
static inline float __fsub_rn(float a, float b) { return a - b; }
static inline float __fmul_rn(float a, float b) { return a * b; }
static inline float __fdiv_rn(float a, float b) { return a / b; }
static inline float __fmaf_rn(float a, float b, float c) { return fmaf(a, b, c); }
static inline float __frcp_rn(float a) { return 1.0f / a; }
static inline float __fsqrt_rn(float a) { return sqrtf(a); }
static inline float __frsqrt_rn(float a) { return 1.0f / sqrtf(a); }
static inline double __dadd_rn(double a, double b) { return a + b; }
static inline double __dsub_rn(double a, double b) { return a - b; }
static inline double __dmul_rn(double a, double b) { return a * b; }
static inline double __ddiv_rn(double a, double b) { return a / b; }
static inline double __fma_rn(double a, double b, double c) { return fma(a, b, c); }
static inline double __drcp_rn(double a) { return 1.0 / a; }
static inline double __dsqrt_rn(double a) { return sqrt(a); }

/* Conversions: round as named, saturate to the target range, NaN -> 0. */
namespace sf_emu {
namespace detail {
template <class I, class F>
inline I sat_convert(F r) {
    if (r != r) return 0;
    if (r <= (F)std::numeric_limits<I>::min()) return std::numeric_limits<I>::min();
    if (r >= (F)std::numeric_limits<I>::max()) return std::numeric_limits<I>::max();
    return (I)r;
}
}  // namespace detail
}  // namespace sf_emu
#define SF_EMU_CONV(I, F, fname)                                                                   \
    static inline I fname##_rn(F x) { return ::sf_emu::detail::sat_convert<I>(nearbyint(x)); }     \
    static inline I fname##_rz(F x) { return ::sf_emu::detail::sat_convert<I>(trunc(x)); }         \
    static inline I fname##_rd(F x) { return ::sf_emu::detail::sat_convert<I>(floor(x)); }         \
    static inline I fname##_ru(F x) { return ::sf_emu::detail::sat_convert<I>(ceil(x)); }
SF_EMU_CONV(int, float, __float2int)
SF_EMU_CONV(unsigned int, float, __float2uint)
SF_EMU_CONV(long long, float, __float2ll)
SF_EMU_CONV(unsigned long long, float, __float2ull)
SF_EMU_CONV(int, double, __double2int)
SF_EMU_CONV(unsigned int, double, __double2uint)
SF_EMU_CONV(long long, double, __double2ll)
SF_EMU_CONV(unsigned long long, double, __double2ull)
#undef SF_EMU_CONV
static inline float __int2float_rn(int x) { return (float)x; }
static inline float __uint2float_rn(unsigned x) { return (float)x; }
static inline float __ll2float_rn(long long x) { return (float)x; }
static inline double __int2double_rn(int x) { return (double)x; }
static inline float __double2float_rn(double x) { return (float)x; }
static inline float __int_as_float(int x) { return ::sf_emu::detail::from_bits<float>((uint32_t)x); }
static inline int __float_as_int(float x) { return (int)(uint32_t)::sf_emu::detail::to_bits(x); }
static inline float __uint_as_float(unsigned x) { return ::sf_emu::detail::from_bits<float>(x); }
static inline unsigned __float_as_uint(float x) { return (uint32_t)::sf_emu::detail::to_bits(x); }
static inline double __longlong_as_double(long long x) { return ::sf_emu::detail::from_bits<double>((uint64_t)x); }
static inline long long __double_as_longlong(double x) { return (long long)::sf_emu::detail::to_bits(x); }

/* min/max: CUDA's overload set (math_functions.hpp). */
#define SF_EMU_MM(R, A, B, MINEXPR, MAXEXPR)          \
    static inline R min(A a, B b) { return MINEXPR; } \
    static inline R max(A a, B b) { return MAXEXPR; }
#define SF_EMU_MM_INT(T) SF_EMU_MM(T, T, T, a < b ? a : b, a > b ? a : b)
#define SF_EMU_MM_MIX(U, S)                                                                          \
    SF_EMU_MM(U, S, U, (U)a < b ? (U)a : b, (U)a > b ? (U)a : b)                                   \
    SF_EMU_MM(U, U, S, a < (U)b ? a : (U)b, a > (U)b ? a : (U)b)
SF_EMU_MM_INT(int)
SF_EMU_MM_INT(unsigned int)
SF_EMU_MM_INT(long)
SF_EMU_MM_INT(unsigned long)
SF_EMU_MM_INT(long long)
SF_EMU_MM_INT(unsigned long long)
SF_EMU_MM_MIX(unsigned int, int)
SF_EMU_MM_MIX(unsigned long, long)
SF_EMU_MM_MIX(unsigned long long, long long)
SF_EMU_MM(float, float, float, fminf(a, b), fmaxf(a, b))
SF_EMU_MM(double, double, double, fmin(a, b), fmax(a, b))
SF_EMU_MM(double, float, double, fmin((double)a, b), fmax((double)a, b))
SF_EMU_MM(double, double, float, fmin(a, (double)b), fmax(a, (double)b))
#undef SF_EMU_MM
#undef SF_EMU_MM_INT
#undef SF_EMU_MM_MIX

/* ------------------------------------------------------------------------- */
/* Misc                                                                      */
/* ------------------------------------------------------------------------- */
template <class T>
static inline T __ldg(const T* p) {
    return *p;
}
static inline long long clock64() {
    return (long long)std::chrono::duration_cast<std::chrono::nanoseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}
[[noreturn]] static inline void __trap() { ::sf_emu::detail::fail("__trap() called in a kernel"); }

#endif /* __CUDACC__ */
#endif /* SF_CUDA_EMU_H */
