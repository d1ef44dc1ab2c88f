/*
 * philox.h -- spikeforge's one and only random number generator.
 *
 * Philox-4x32-10 (Salmon, Moraes, Dror & Shaw, "Parallel Random Numbers: As
 * Easy as 1, 2, 3", SC'11; the Random123 library), written out so that the
 * very same header compiles as plain C++ (g++ -std=c++17) and as CUDA (nvcc).
 * Generated CPU code and generated GPU kernels therefore produce bit-identical
 * uniform numbers for the same seed, and spikeforge/rng.py is a numpy
 * reference implementation of everything below (tested against this file).
 *
 * Philox is *counter based*: a draw is a pure function of a 128-bit counter and
 * a 64-bit key, with no state to carry between calls, threads, or time steps.
 * Any neuron in any batch at any step can compute its random numbers directly.
 *
 * ---------------------------------------------------------------------------
 * STREAM CONVENTION (every draw spikeforge makes follows it)
 * ---------------------------------------------------------------------------
 *   key     = (k0, k1)               = (seed & 0xffffffff, seed >> 32)
 *   counter = (c0, c1, c2, c3)       = (element, batch, step, stream)
 *
 *   element : index of the neuron / synapse / item the number is for
 *   batch   : index of the batch (independent simulation instance)
 *   step    : simulation time step
 *   stream  : which random quantity this is, so that two different draws for
 *             the same element/batch/step never reuse a counter:
 *
 *     simulation draws     stream = (population_id << 16) | call_site
 *                          (call_site = index of the random call in the
 *                          generated code for that population, 0..65535)
 *     initialisation draws stream = 0x80000000u | (population_id << 16) | var_index
 *                          with step = 0
 *                          (var_index = index of the variable being
 *                          initialised, 0..65535)
 *
 *   population_id must be < 0x8000 so that the top bit of `stream` only ever
 *   marks initialisation draws.  sf_stream_id() / sf_init_stream_id() below
 *   (and stream_id() / init_stream_id() in spikeforge/rng.py) build these.
 *
 * Each Philox call yields four 32-bit words.  A uniform uses word v[0]; a
 * normal uses v[0] and v[1] (Box-Muller, cosine branch only).  Words v[2] and
 * v[3] are currently unused: a second value for the same quantity needs a
 * different call_site, never the spare words, so that the float and double
 * paths stay in step.
 *
 * ---------------------------------------------------------------------------
 * Reproducibility notes
 * ---------------------------------------------------------------------------
 *  - sf_philox4x32_10, sf_u32_to_uniform_*, sf_uniform_* are exact integer /
 *    exactly rounded operations: identical on every compiler and device.
 *  - sf_normal_* call log/sqrt/cos, whose last bit may differ between libm,
 *    CUDA's math library, and --use_fast_math.  Expect agreement to ~1 ulp,
 *    not bit-for-bit.
 *
 * Only <stdint.h> and <math.h> are used, so the header can be pasted into
 * NVRTC-style sources as well.
 */
#ifndef SPIKEFORGE_PHILOX_H
#define SPIKEFORGE_PHILOX_H

#include <stdint.h>
#include <math.h>

/* Qualifier for every function here: callable from host and device code under
 * nvcc; internal-linkage inline functions in plain C++. */
#ifndef SF_HOSTDEV
#ifdef __CUDACC__
#define SF_HOSTDEV __host__ __device__ __forceinline__
#else
#define SF_HOSTDEV static inline
#endif
#endif

/* Philox-4x32 constants, as in Random123. */
#define SF_PHILOX_M0 0xD2511F53u /* round multiplier applied to word 0 */
#define SF_PHILOX_M1 0xCD9E8D57u /* round multiplier applied to word 2 */
#define SF_PHILOX_W0 0x9E3779B9u /* key schedule increment (golden ratio) */
#define SF_PHILOX_W1 0xBB67AE85u /* key schedule increment (sqrt(3) - 1) */

/* Top bit of the stream word: marks initialisation draws. */
#define SF_INIT_STREAM_BIT 0x80000000u

/* The four 32-bit output words of one Philox call. */
struct sf_philox4 {
    uint32_t v[4];
};

/* One Philox round: two 32x32->64 multiplies, then a Feistel-like swap/xor.
 * The 64-bit product gives mulhi (upper 32 bits) and mullo (lower 32 bits);
 * this is portable and compiles to mul.wide.u32 on NVIDIA GPUs. */
SF_HOSTDEV void sf_philox4x32_round_(uint32_t* x, uint32_t k0, uint32_t k1) {
    const uint64_t p0 = (uint64_t)SF_PHILOX_M0 * (uint64_t)x[0];
    const uint64_t p1 = (uint64_t)SF_PHILOX_M1 * (uint64_t)x[2];
    const uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
    const uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
    const uint32_t y0 = hi1 ^ x[1] ^ k0;
    const uint32_t y2 = hi0 ^ x[3] ^ k1;
    x[0] = y0;
    x[1] = lo1;
    x[2] = y2;
    x[3] = lo0;
}

/* Philox-4x32 with 10 rounds, identical to Random123's philox4x32_R(10, ...):
 * counter (c0, c1, c2, c3), key (k0, k1).  Round 1 uses the key as given;
 * before each of rounds 2..10 the key is bumped by the Weyl constants. */
SF_HOSTDEV sf_philox4 sf_philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3,
                                       uint32_t k0, uint32_t k1) {
    uint32_t x[4] = {c0, c1, c2, c3};
    sf_philox4x32_round_(x, k0, k1);
    for (int r = 1; r < 10; ++r) {
        k0 += SF_PHILOX_W0;
        k1 += SF_PHILOX_W1;
        sf_philox4x32_round_(x, k0, k1);
    }
    sf_philox4 out;
    out.v[0] = x[0];
    out.v[1] = x[1];
    out.v[2] = x[2];
    out.v[3] = x[3];
    return out;
}

/* Stream word for a draw made during simulation (see convention above). */
SF_HOSTDEV uint32_t sf_stream_id(uint32_t population_id, uint32_t call_site) {
    return (population_id << 16) | (call_site & 0xffffu);
}

/* Stream word for a draw made while initialising a variable (step must be 0). */
SF_HOSTDEV uint32_t sf_init_stream_id(uint32_t population_id, uint32_t var_index) {
    return SF_INIT_STREAM_BIT | (population_id << 16) | (var_index & 0xffffu);
}

/* The Philox call behind every draw: key from the 64-bit seed, counter from
 * (element, batch, step, stream). */
SF_HOSTDEV sf_philox4 sf_philox_draw(uint64_t seed, uint32_t element, uint32_t batch,
                                     uint32_t step, uint32_t stream) {
    return sf_philox4x32_10(element, batch, step, stream, (uint32_t)(seed & 0xffffffffu),
                            (uint32_t)(seed >> 32));
}

/* 32 random bits -> float uniform on the open interval (0, 1):
 *   ((x >> 9) + 0.5) * 2^-23        (= odd multiples of 2^-24)
 * Uses the top 23 bits.  Every step is exact in float arithmetic, so the
 * result lies on a grid of 2^23 equally likely points symmetric about 1/2,
 * and is never 0 or 1 (safe for log(u) and log(1 - u)): smallest value 2^-24,
 * largest 1 - 2^-24.
 * Why not 24 bits, ((x >> 8) + 0.5) * 2^-24?  For (x >> 8) >= 2^23 the sum
 * k + 0.5 needs 25 significant bits, float rounds it, and x = 0xffffffff gives
 * exactly 1.0f. */
SF_HOSTDEV float sf_u32_to_uniform_float(uint32_t x) {
    return ((float)(x >> 9) + 0.5f) * 1.1920928955078125e-07f; /* 2^-23 */
}

/* 32 random bits -> double uniform on the open interval (0, 1):
 *   (x + 0.5) * 2^-32
 * Exact in double; never 0 or 1.  Smallest value 2^-33, largest 1 - 2^-33. */
SF_HOSTDEV double sf_u32_to_uniform_double(uint32_t x) {
    return ((double)x + 0.5) * 2.3283064365386962890625e-10; /* 2^-32 */
}

/* Uniform float in (0, 1) for (seed, element, batch, step, stream); word v[0]. */
SF_HOSTDEV float sf_uniform_f(uint64_t seed, uint32_t element, uint32_t batch, uint32_t step,
                              uint32_t stream) {
    return sf_u32_to_uniform_float(sf_philox_draw(seed, element, batch, step, stream).v[0]);
}

/* Uniform double in (0, 1); word v[0] (the same word as sf_uniform_f, so the
 * two agree to within 2^-24). */
SF_HOSTDEV double sf_uniform_d(uint64_t seed, uint32_t element, uint32_t batch, uint32_t step,
                               uint32_t stream) {
    return sf_u32_to_uniform_double(sf_philox_draw(seed, element, batch, step, stream).v[0]);
}

/* Standard normal float (mean 0, sd 1) by Box-Muller from words v[0], v[1]:
 *   sqrt(-2 ln u0) * cos(2 pi u1)
 * u0 >= 2^-24, so the log is finite; |result| <= sqrt(2 * 24 ln 2) ~= 5.77. */
SF_HOSTDEV float sf_normal_f(uint64_t seed, uint32_t element, uint32_t batch, uint32_t step,
                             uint32_t stream) {
    const sf_philox4 r = sf_philox_draw(seed, element, batch, step, stream);
    const float u0 = sf_u32_to_uniform_float(r.v[0]);
    const float u1 = sf_u32_to_uniform_float(r.v[1]);
    return sqrtf(-2.0f * logf(u0)) * cosf(6.28318530717958647692f * u1);
}

/* Standard normal double by Box-Muller from words v[0], v[1] (same formula in
 * double; u0 >= 2^-33, |result| <= sqrt(2 * 33 ln 2) ~= 6.76). */
SF_HOSTDEV double sf_normal_d(uint64_t seed, uint32_t element, uint32_t batch, uint32_t step,
                              uint32_t stream) {
    const sf_philox4 r = sf_philox_draw(seed, element, batch, step, stream);
    const double u0 = sf_u32_to_uniform_double(r.v[0]);
    const double u1 = sf_u32_to_uniform_double(r.v[1]);
    return sqrt(-2.0 * log(u0)) * cos(6.28318530717958647692 * u1);
}

#endif /* SPIKEFORGE_PHILOX_H */
