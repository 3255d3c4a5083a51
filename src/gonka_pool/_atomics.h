/* 64-bit atomics and a monotonic clock for the selection core.
 *
 * Names follow CPython's pyatomic.h: an unsuffixed operation is sequentially
 * consistent, and a suffix (_relaxed, _acquire, _release, _acq_rel) names a weaker
 * order, so every call site says which order it relies on.  The core needs load,
 * store, exchange, fetch_add and compare_exchange relaxed for node state (see
 * _pool.pyx for why relaxed is enough), an acquire load and an acq_rel exchange
 * that publish a new membership, and the sequentially consistent load, store and
 * fetch_add (with a release fetch_add to leave) of the handshake between marks and
 * update().  The ladder follows pyatomic.h too: C11 <stdatomic.h> wherever the
 * compiler has it, MSVC's _Interlocked* intrinsics otherwise, and #error elsewhere.
 *
 * Nothing here touches a Python object: every function is safe without the GIL.
 */
#ifndef GONKA_POOL_ATOMICS_H
#define GONKA_POOL_ATOMICS_H

#include <stdint.h>
#include <string.h>

/* MSVC's C compiler spells inline __inline before C11. */
#if defined(_MSC_VER)
#  define GP_INLINE __inline
#else
#  define GP_INLINE inline
#endif

/* GP_ASSERT(cond): the core's invariants, checked only in a debug build
 * (GONKA_POOL_DEBUG_BUILD=1 in setup.py defines GP_DEBUG and undefines NDEBUG).
 * Elsewhere cond is never evaluated: sizeof only keeps a variable that an
 * assertion alone reads from counting as unused, so a release build has neither
 * the check nor a warning, and the same machine code as without it. */
#if !defined(GP_DEBUG)
#  define GP_DEBUG 0
#endif
#if GP_DEBUG
#  if defined(NDEBUG)
#    error "GP_DEBUG needs NDEBUG undefined, or assert() checks nothing"
#  endif
#  include <assert.h>
#  define GP_ASSERT(cond) assert(cond)
#else
#  define GP_ASSERT(cond) ((void)sizeof(cond))
#endif

#if defined(_MSC_VER) && !defined(__clang__) && \
    (!defined(__STDC_VERSION__) || __STDC_VERSION__ < 201112L || defined(__STDC_NO_ATOMICS__))
/* ---- MSVC: interlocked intrinsics (x64 and ARM64) ----------------------- */
#  include <intrin.h>
#  define GP_ATOMICS_IMPL "msvc-interlocked"
typedef struct { volatile int64_t v; } gp_atomic_u64;
typedef struct { volatile int64_t v; } gp_atomic_i64;

static __inline uint64_t gp_u64_load_relaxed(gp_atomic_u64 *a) {
#  if defined(_M_ARM64)
    return (uint64_t)__iso_volatile_load64((volatile __int64 *)&a->v);
#  else
    return (uint64_t)a->v;  /* aligned 64-bit loads are atomic on x64 */
#  endif
}
static __inline void gp_u64_store_relaxed(gp_atomic_u64 *a, uint64_t x) {
    _InterlockedExchange64(&a->v, (int64_t)x);
}
static __inline uint64_t gp_u64_exchange_relaxed(gp_atomic_u64 *a, uint64_t x) {
    return (uint64_t)_InterlockedExchange64(&a->v, (int64_t)x);
}
static __inline uint64_t gp_u64_fetch_add_relaxed(gp_atomic_u64 *a, uint64_t x) {
    return (uint64_t)_InterlockedExchangeAdd64(&a->v, (int64_t)x);
}
static __inline int gp_u64_cas_relaxed(gp_atomic_u64 *a, uint64_t expected, uint64_t desired) {
    return _InterlockedCompareExchange64(&a->v, (int64_t)desired, (int64_t)expected)
           == (int64_t)expected;
}
static __inline int64_t gp_i64_load_relaxed(gp_atomic_i64 *a) {
    return (int64_t)gp_u64_load_relaxed((gp_atomic_u64 *)a);
}
static __inline void gp_i64_store_relaxed(gp_atomic_i64 *a, int64_t x) {
    _InterlockedExchange64(&a->v, x);
}
static __inline int64_t gp_i64_fetch_add_relaxed(gp_atomic_i64 *a, int64_t x) {
    return _InterlockedExchangeAdd64(&a->v, x);
}
static __inline uint64_t gp_u64_load_acquire(gp_atomic_u64 *a) {
    /* x64 loads are acquire loads; ARM64 needs the barrier. */
    uint64_t v = gp_u64_load_relaxed(a);
#  if defined(_M_ARM64)
    __dmb(_ARM64_BARRIER_ISH);
#  else
    _ReadWriteBarrier();
#  endif
    return v;
}
static __inline uint64_t gp_u64_fetch_add_release(gp_atomic_u64 *a, uint64_t x) {
    return (uint64_t)_InterlockedExchangeAdd64(&a->v, (int64_t)x);
}
static __inline uint64_t gp_u64_exchange_acq_rel(gp_atomic_u64 *a, uint64_t x) {
    return (uint64_t)_InterlockedExchange64(&a->v, (int64_t)x);  /* full barrier */
}
/* The interlocked read-modify-writes are full barriers; a plain load between two
 * full barriers is sequentially consistent on ARM64, and on x64 already is against
 * stores made by interlocked exchange (which gp_u64_store is). */
static __inline uint64_t gp_u64_load(gp_atomic_u64 *a) {
    uint64_t v;
#  if defined(_M_ARM64)
    __dmb(_ARM64_BARRIER_ISH);
    v = gp_u64_load_relaxed(a);
    __dmb(_ARM64_BARRIER_ISH);
#  else
    _ReadWriteBarrier();
    v = gp_u64_load_relaxed(a);
    _ReadWriteBarrier();
#  endif
    return v;
}
static __inline void gp_u64_store(gp_atomic_u64 *a, uint64_t x) {
    _InterlockedExchange64(&a->v, (int64_t)x);
}
static __inline uint64_t gp_u64_fetch_add(gp_atomic_u64 *a, uint64_t x) {
    return (uint64_t)_InterlockedExchangeAdd64(&a->v, (int64_t)x);
}
static __inline int gp_u64_cas(gp_atomic_u64 *a, uint64_t expected, uint64_t desired) {
    return _InterlockedCompareExchange64(&a->v, (int64_t)desired, (int64_t)expected)
           == (int64_t)expected;  /* a full barrier */
}
/* Interlocked operations on aligned 64-bit words are lock-free on x64 and ARM64. */
static __inline int gp_atomics_lock_free(void) { return 1; }

#elif !defined(__STDC_NO_ATOMICS__)
/* ---- C11 <stdatomic.h> (GCC, Clang, MSVC with /std:c11 /experimental:c11atomics) */
#  include <stdatomic.h>
#  define GP_ATOMICS_IMPL "c11-stdatomic"
typedef struct { _Atomic(uint64_t) v; } gp_atomic_u64;
typedef struct { _Atomic(int64_t) v; } gp_atomic_i64;

static inline uint64_t gp_u64_load_relaxed(gp_atomic_u64 *a) {
    return atomic_load_explicit(&a->v, memory_order_relaxed);
}
static inline void gp_u64_store_relaxed(gp_atomic_u64 *a, uint64_t x) {
    atomic_store_explicit(&a->v, x, memory_order_relaxed);
}
static inline uint64_t gp_u64_exchange_relaxed(gp_atomic_u64 *a, uint64_t x) {
    return atomic_exchange_explicit(&a->v, x, memory_order_relaxed);
}
static inline uint64_t gp_u64_fetch_add_relaxed(gp_atomic_u64 *a, uint64_t x) {
    return atomic_fetch_add_explicit(&a->v, x, memory_order_relaxed);
}
static inline int gp_u64_cas_relaxed(gp_atomic_u64 *a, uint64_t expected, uint64_t desired) {
    return atomic_compare_exchange_strong_explicit(
        &a->v, &expected, desired, memory_order_relaxed, memory_order_relaxed);
}
static inline int64_t gp_i64_load_relaxed(gp_atomic_i64 *a) {
    return atomic_load_explicit(&a->v, memory_order_relaxed);
}
static inline void gp_i64_store_relaxed(gp_atomic_i64 *a, int64_t x) {
    atomic_store_explicit(&a->v, x, memory_order_relaxed);
}
static inline int64_t gp_i64_fetch_add_relaxed(gp_atomic_i64 *a, int64_t x) {
    return atomic_fetch_add_explicit(&a->v, x, memory_order_relaxed);
}
static inline uint64_t gp_u64_load_acquire(gp_atomic_u64 *a) {
    return atomic_load_explicit(&a->v, memory_order_acquire);
}
static inline uint64_t gp_u64_fetch_add_release(gp_atomic_u64 *a, uint64_t x) {
    return atomic_fetch_add_explicit(&a->v, x, memory_order_release);
}
static inline uint64_t gp_u64_exchange_acq_rel(gp_atomic_u64 *a, uint64_t x) {
    return atomic_exchange_explicit(&a->v, x, memory_order_acq_rel);
}
static inline uint64_t gp_u64_load(gp_atomic_u64 *a) {
    return atomic_load_explicit(&a->v, memory_order_seq_cst);
}
static inline void gp_u64_store(gp_atomic_u64 *a, uint64_t x) {
    atomic_store_explicit(&a->v, x, memory_order_seq_cst);
}
static inline uint64_t gp_u64_fetch_add(gp_atomic_u64 *a, uint64_t x) {
    return atomic_fetch_add_explicit(&a->v, x, memory_order_seq_cst);
}
static inline int gp_u64_cas(gp_atomic_u64 *a, uint64_t expected, uint64_t desired) {
    return atomic_compare_exchange_strong(&a->v, &expected, desired);
}
/* Whether both atomic types are lock-free, and so address-free (C11 7.17.5: a
 * lock-free atomic works when the same memory is mapped into several processes),
 * which EndpointPool(shared=...) needs. */
static inline int gp_atomics_lock_free(void) {
    static gp_atomic_u64 u;
    static gp_atomic_i64 i;
    return atomic_is_lock_free(&u.v) && atomic_is_lock_free(&i.v);
}

#else
#  error "gonka_pool needs C11 <stdatomic.h> or MSVC interlocked intrinsics"
#endif

/* ---- Monotonic clock in nanoseconds ------------------------------------- */
/* CLOCK_MONOTONIC's epoch, as time.monotonic_ns(), so the C core and the pure twin
 * agree on what "now" means; a wall clock would let an NTP step revive or freeze
 * every cooling node at once.  On Linux the core reads CLOCK_MONOTONIC_COARSE: the
 * same clock as of the last timer tick, a fraction of a precise read's cost
 * (benchmarks/clock_cost.c), which mark_failed pays.  gp_clock_init() picks it
 * when its tick (clock_getres) is at most max_tick_ns and returns that tick, which
 * callers add to every deadline so a node is never let back a tick early; it
 * returns 0 when it keeps the precise clock (other systems, or a coarse tick too
 * long).  Called once at import, before any pool exists: read-only afterwards. */
#if defined(_WIN32)
#  include <windows.h>
static __inline uint64_t gp_monotonic_ns(void) {
    static LARGE_INTEGER freq;  /* racy first write of the same value: benign */
    LARGE_INTEGER now;
    if (freq.QuadPart == 0) QueryPerformanceFrequency(&freq);
    QueryPerformanceCounter(&now);
    return (uint64_t)((double)now.QuadPart * (1e9 / (double)freq.QuadPart));
}
static __inline uint64_t gp_clock_init(uint64_t max_tick_ns) {
    (void)max_tick_ns;
    return 0;
}
static __inline const char *gp_clock_name(void) { return "QueryPerformanceCounter"; }
#else
#  include <time.h>
static clockid_t gp_clock_id = CLOCK_MONOTONIC;
static inline uint64_t gp_monotonic_ns(void) {
    struct timespec ts;
    clock_gettime(gp_clock_id, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
static inline uint64_t gp_clock_init(uint64_t max_tick_ns) {
#  if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
    struct timespec res, probe;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0 && res.tv_sec == 0 && res.tv_nsec > 0
            && (uint64_t)res.tv_nsec <= max_tick_ns
            && clock_gettime(CLOCK_MONOTONIC_COARSE, &probe) == 0) {
        gp_clock_id = CLOCK_MONOTONIC_COARSE;
        return (uint64_t)res.tv_nsec;
    }
#  endif
    (void)max_tick_ns;
    gp_clock_id = CLOCK_MONOTONIC;
    return 0;
}
static inline const char *gp_clock_name(void) {
#  if defined(__linux__) && defined(CLOCK_MONOTONIC_COARSE)
    if (gp_clock_id == CLOCK_MONOTONIC_COARSE) return "CLOCK_MONOTONIC_COARSE";
#  endif
    return "CLOCK_MONOTONIC";
}
#endif

/* ---- Cache-line padding ------------------------------------------------- */
/* A stripe's cursor, which every selection writes, gets a 64-byte line of its own,
 * so the writes never invalidate the read-mostly deadlines and sizes beside it.
 * The stripe's count of marks in flight shares the line: the thread that selects
 * on a stripe is the one that marks on it, and update() reads it once per swap. */
#define GP_CACHE_LINE 64
typedef struct {
    gp_atomic_u64 cursor;
    gp_atomic_u64 in_flight;
    char pad[GP_CACHE_LINE - 2 * sizeof(gp_atomic_u64)];
} gp_stripe;

/* A node's load (EndpointPool.acquire and its leases), one line per node: every
 * acquire and settle of a node writes its in_flight count, and the fields beside
 * it are written by the same settles, so two nodes' counts never share a line; a
 * pick reads every line of a small pool (a read of a line shared with other cores
 * costs nothing until one of them writes it). */
typedef struct {
    gp_atomic_u64 in_flight;
    gp_atomic_u64 ewma_us;
    gp_atomic_u64 stamp_ns;
    gp_atomic_u64 floor_us;
    gp_atomic_u64 limit;
    gp_atomic_u64 last_event_ns;
    gp_atomic_u64 inv_limit;  /* the bits of the double 1.0 / limit, written with it:
                                 a pick multiplies by it where it would divide */
    uint64_t rank;  /* which copy of its endpoint this slot is (0 unless listed twice);
                       set before the membership is published, never written after */
} gp_load;  /* 8 words: one line (GP_CACHE_LINE) */

/* A double's bits in a 64-bit atomic word, and back (memcpy: no aliasing question). */
static GP_INLINE uint64_t gp_double_bits(double x) {
    uint64_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

static GP_INLINE double gp_bits_double(uint64_t bits) {
    double x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

/* ---- Waiting in a spin loop --------------------------------------------- */
/* A mark waits here while update() copies a membership, and update() while the
 * marks already in flight finish: both waits are a few hundred nanoseconds unless
 * the other thread was descheduled, when yielding the CPU lets it run.  Nothing
 * here may block or touch the interpreter (see _pool.pyx, "Marks and update()"). */
#if defined(_WIN32)
static __inline void gp_spin_wait(unsigned *spins) {
    if (++*spins < 64) YieldProcessor(); else SwitchToThread();
}
#else
#  include <sched.h>
#  if defined(__x86_64__) || defined(__i386__)
#    define GP_CPU_RELAX() __builtin_ia32_pause()
#  elif defined(__aarch64__) || defined(__arm__)
#    define GP_CPU_RELAX() __asm__ __volatile__("yield" ::: "memory")
#  else
#    define GP_CPU_RELAX() ((void)0)
#  endif
static inline void gp_spin_wait(unsigned *spins) {
    if (++*spins < 64) GP_CPU_RELAX(); else sched_yield();
}
#endif

/* ---- Remainder by an invariant divisor ---------------------------------- */
/* position % n without a hardware divide (20-40 cycles, the largest cost of a
 * selection): Barrett reduction with inv = floor((2**64 - 1) / n), computed once per
 * pool.  The estimated quotient is at most 2 below the true one, so at most two
 * corrections follow. */
#if defined(__SIZEOF_INT128__)
static GP_INLINE uint64_t gp_mulhi_u64(uint64_t a, uint64_t b) {
    return (uint64_t)(((unsigned __int128)a * b) >> 64);
}
#  define GP_HAVE_MULHI 1
#elif defined(_MSC_VER) && (defined(_M_X64) || defined(_M_ARM64))
static __inline uint64_t gp_mulhi_u64(uint64_t a, uint64_t b) { return __umulh(a, b); }
#  define GP_HAVE_MULHI 1
#else
#  define GP_HAVE_MULHI 0
#endif

static GP_INLINE uint64_t gp_reciprocal(uint64_t n) {
    return UINT64_MAX / n;
}

static GP_INLINE uint64_t gp_mod(uint64_t position, uint64_t n, uint64_t inv) {
#if GP_HAVE_MULHI
    uint64_t r = position - gp_mulhi_u64(position, inv) * n;
    while (r >= n) r -= n;
    return r;
#else
    (void)inv;
    return position % n;
#endif
}

/* ---- Per-thread slot ----------------------------------------------------- */
/* Each thread takes a slot number once, from a process-wide counter, the first time
 * it selects; a pool maps the slot to one of its cursor stripes.  Threads created one
 * after another get consecutive slots, hence different stripes. */
#if defined(_MSC_VER)
#  define GP_THREAD_LOCAL __declspec(thread)
#elif (defined(__GNUC__) || defined(__clang__)) && defined(__GLIBC__)
/* initial-exec: one %fs-relative load instead of a __tls_get_addr call; glibc
 * reserves static TLS for dlopen'ed modules that need a few bytes of it. */
#  define GP_THREAD_LOCAL __thread __attribute__((tls_model("initial-exec")))
#elif defined(__GNUC__) || defined(__clang__)
#  define GP_THREAD_LOCAL __thread
#else
#  define GP_THREAD_LOCAL _Thread_local
#endif

static gp_atomic_u64 gp_next_thread_slot;
static GP_THREAD_LOCAL uint64_t gp_this_thread_slot;  /* 0: not taken yet */

static GP_INLINE uint64_t gp_thread_slot(void) {
    uint64_t slot = gp_this_thread_slot;
    if (slot == 0) {
        slot = gp_u64_fetch_add_relaxed(&gp_next_thread_slot, 1) + 1;
        gp_this_thread_slot = slot;
    }
    return slot - 1;
}

#endif /* GONKA_POOL_ATOMICS_H */
