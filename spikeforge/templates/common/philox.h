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
 * v[3] are unused by these: a second value for the same quantity needs a
 * different call_site, never the spare words, so that the float and double
 * paths stay in step.  (sf_poisson, below, uses all four words of each call on
 * the streams of an owner id of its own: its layout is described there.)
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

/* Unroll the loop that follows completely (a fixed, small trip count): with no
 * loop left inside, a loop over elements that calls these functions can be
 * vectorised by the C++ compiler.  Only a hint; the results do not depend on it. */
#ifndef SF_UNROLL
#if defined(__CUDACC__) || defined(__clang__)
#define SF_UNROLL _Pragma("unroll")
#elif defined(__GNUC__)
#define SF_UNROLL _Pragma("GCC unroll 64")
#else
#define SF_UNROLL
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
    SF_UNROLL
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

/* ---------------------------------------------------------------------------
 * Poisson-distributed counts (external Poisson drive)
 * ---------------------------------------------------------------------------
 * sf_poisson() draws K ~ Poisson(lambda) for (seed, element, batch, step) on
 * the streams of one owner (an external Poisson input has an owner id of its
 * own, like a population):
 *
 *   attempt j (j = 0, 1, ...) uses the Philox call with
 *     counter = (element, batch, step, sf_stream_id(owner_id, j))
 *   and turns its four words into two uniforms with 52 random bits each:
 *     U_j = sf_u64_to_uniform_double(v[0], v[1]),  V_j = ... (v[2], v[3]).
 *
 * lambda < SF_POISSON_INVERSION_MAX: inversion, one attempt (U_0 only): the
 *   smallest k with U_0 <= F_k = P(K <= k), the distribution function built
 *   up by the recurrence p_0 = exp(-lambda), p_k = p_{k-1} * lambda / k,
 *   F_k = F_{k-1} + p_k, which stops at the first k where F no longer grows
 *   (the tail below double resolution); where U_0 is above every F, the k
 *   where it stopped.  U_0 = (m + 0.5) * 2^-52 with m the 52-bit integer of
 *   the two words, so U_0 > F_k exactly when m >= T_k, the threshold
 *   T_k = floor(F_k * 2^52 - 0.5) + 1 (sf_poisson_threshold), and the count
 *   is k = the number of thresholds T_k <= m: integer comparisons against a
 *   table, a fixed number of them with no branch, so that a loop over
 *   neurons is vectorised (Philox included).  The recurrence stops within
 *   47 terms for every lambda < 10; the table has SF_POISSON_TABLE entries,
 *   the unused ones SF_POISSON_NEVER (above every m).
 * lambda >= SF_POISSON_INVERSION_MAX: transformed rejection with squeeze,
 *   "PTRS" (W. Hormann, "The transformed rejection method for generating
 *   Poisson random variables", Insurance: Mathematics and Economics 12, 1993):
 *   a candidate from (U_j, V_j), accepted with the exact Poisson pmf; about
 *   1.1 attempts per draw (acceptance >= 0.86 for every lambda >= 10).
 *
 * The per-lambda constants live in sf_poisson_params (sf_poisson_setup() on
 * host or device; the code generator computes them once, in Python, with
 * spikeforge.rng.poisson_setup, and prints them as exact literals).  The draw
 * itself uses only IEEE +, -, *, /, floor, fabs and (PTRS only) log, so with
 * no fused multiply-add (the build flags of every backend) the CPU and
 * cuda-emu backends and spikeforge/rng.py give the same count; a GPU's log may
 * differ from libm's in the last bit, which changes a count only when a
 * uniform falls within an ulp of a decision boundary (~1e-16 per draw).
 * ------------------------------------------------------------------------- */

/* Two 32-bit words -> double uniform on the open interval (0, 1) with 52
 * random bits: (m + 0.5) * 2^-52, m = the top 52 of the 64 bits hi:lo.
 * Exact in double; never 0 or 1 (smallest 2^-53, largest 1 - 2^-53). */
SF_HOSTDEV double sf_u64_to_uniform_double(uint32_t hi, uint32_t lo) {
    const uint64_t m = ((uint64_t)hi << 20) | (uint64_t)(lo >> 12);
    return ((double)m + 0.5) * 2.220446049250313080847263336181640625e-16; /* 2^-52 */
}

/* Below this mean, inversion; from it on, PTRS. */
#define SF_POISSON_INVERSION_MAX 10.0
/* Entries of the inversion's table of thresholds (at most 47 are used, for lambda just below 10). */
#define SF_POISSON_TABLE 48
/* A threshold no 52-bit m reaches: the table's unused entries (and all of them for PTRS). */
#define SF_POISSON_NEVER 0x10000000000000ull /* 2^52 */

/* The constants of one mean lambda (see sf_poisson_setup). */
struct sf_poisson_params {
    double lambda;           /* the mean number of events per draw */
    double exp_minus_lambda; /* P(K = 0) */
    double log_lambda;       /* PTRS: log(lambda) */
    double b;                /* PTRS: 0.931 + 2.53 sqrt(lambda) */
    double a;                /* PTRS: -0.059 + 0.02483 b */
    double inv_alpha;        /* PTRS: 1.1239 + 1.1328 / (b - 3.4) */
    double v_r;              /* PTRS: 0.9277 - 3.6224 / (b - 2), the squeeze */
    uint64_t threshold[SF_POISSON_TABLE]; /* inversion: T_k, U_0 > F_k <=> m >= T_k */
};

/* T = the smallest integer m with (m + 0.5) * 2^-52 > F, for 0 <= F <= 1:
 * x = F * 2^52 is exact, so is its fractional part x - floor(x), and
 * m + 0.5 > x holds from m = floor(x) on if that part is below 1/2, else from
 * floor(x) + 1. */
SF_HOSTDEV uint64_t sf_poisson_threshold(double F) {
    const double x = F * 4503599627370496.0; /* 2^52 */
    const double whole = floor(x);
    return (uint64_t)whole + (x - whole >= 0.5 ? 1u : 0u);
}

SF_HOSTDEV sf_poisson_params sf_poisson_setup(double lambda) {
    sf_poisson_params p;
    p.lambda = lambda;
    p.exp_minus_lambda = exp(-lambda);
    p.log_lambda = lambda > 0.0 ? log(lambda) : 0.0;
    p.b = 0.931 + 2.53 * sqrt(lambda);
    p.a = -0.059 + 0.02483 * p.b;
    p.inv_alpha = 1.1239 + 1.1328 / (p.b - 3.4);
    p.v_r = 0.9277 - 3.6224 / (p.b - 2.0);
    for (int k = 0; k < SF_POISSON_TABLE; ++k) p.threshold[k] = SF_POISSON_NEVER;
    if (lambda < SF_POISSON_INVERSION_MAX) {
        double pk = p.exp_minus_lambda, cdf = pk;
        p.threshold[0] = sf_poisson_threshold(cdf);
        for (int k = 1; k < SF_POISSON_TABLE; ++k) {
            pk = pk * lambda / (double)k;
            const double next = cdf + pk;
            if (next == cdf) break; /* F stopped growing: the tail is below double resolution */
            cdf = next;
            p.threshold[k] = sf_poisson_threshold(cdf);
        }
    }
    return p;
}

/* log(k!): a table of exact values (rounded to double) for k < 16, above it
 * Stirling's series for log Gamma(x), x = k + 1 >= 17, to the x^-11 term
 * (the first term left out is below 1e-16 of the result). */
SF_HOSTDEV double sf_log_factorial(double k) {
    if (k < 16.0) {
        const double table[16] = {
            0.0, 0.0, 0.693147180559945309417, 1.79175946922805500081,
            3.17805383034794561965, 4.78749174278204599425, 6.57925121201010099506,
            8.52516136106541430017, 10.6046029027452502284, 12.8018274800814696112,
            15.1044125730755152952, 17.5023078458738858393, 19.9872144956618861495,
            22.5521638531234228856, 25.1912211827386815001, 27.8992713838408915661};
        return table[(int)k];
    }
    const double x = k + 1.0;
    const double r = 1.0 / x;
    const double r2 = r * r;
    /* sum of B_2n / (2n (2n - 1) x^(2n - 1)), n = 1..6 */
    const double series =
        r * (1.0 / 12.0 - r2 * (1.0 / 360.0 - r2 * (1.0 / 1260.0 - r2 * (1.0 / 1680.0 -
        r2 * (1.0 / 1188.0 - r2 * (691.0 / 360360.0))))));
    return (x - 0.5) * log(x) - x + 0.91893853320467274178 /* log(2 pi) / 2 */ + series;
}

/* K ~ Poisson(p.lambda), p.lambda < SF_POISSON_INVERSION_MAX: inversion with
 * the threshold table (layout above).  No branch and no loop of variable
 * length: a loop over elements that calls it can be vectorised. */
SF_HOSTDEV uint32_t sf_poisson_inversion(uint64_t seed, uint32_t element, uint32_t batch, uint32_t step,
                                         uint32_t owner_id, const sf_poisson_params& p) {
    const sf_philox4 r = sf_philox_draw(seed, element, batch, step, sf_stream_id(owner_id, 0u));
    const uint64_t m = ((uint64_t)r.v[0] << 20) | (uint64_t)(r.v[1] >> 12); /* U_0 = (m + 0.5) 2^-52 */
    uint32_t k = 0;
    SF_UNROLL
    for (int j = 0; j < SF_POISSON_TABLE; ++j) k += m >= p.threshold[j] ? 1u : 0u;
    return k;
}

/* K ~ Poisson(p.lambda), p.lambda >= SF_POISSON_INVERSION_MAX: PTRS (above). */
SF_HOSTDEV uint32_t sf_poisson_ptrs(uint64_t seed, uint32_t element, uint32_t batch, uint32_t step,
                                    uint32_t owner_id, const sf_poisson_params& p) {
    for (uint32_t j = 0; j <= 0xffffu; ++j) {
        const sf_philox4 r = sf_philox_draw(seed, element, batch, step, sf_stream_id(owner_id, j));
        const double U = sf_u64_to_uniform_double(r.v[0], r.v[1]) - 0.5;
        const double V = sf_u64_to_uniform_double(r.v[2], r.v[3]);
        const double us = 0.5 - fabs(U);
        const double k = floor((2.0 * p.a / us + p.b) * U + p.lambda + 0.43);
        if (us >= 0.07 && V <= p.v_r) return (uint32_t)k; /* squeeze: surely accepted */
        if (k < 0.0 || (us < 0.013 && V > us)) continue;  /* surely rejected */
        if (log(V * p.inv_alpha / (p.a / (us * us) + p.b)) <=
            -p.lambda + k * p.log_lambda - sf_log_factorial(k))
            return (uint32_t)k;
    }
    /* 65536 rejections in a row (probability below 1e-50000): the mode. */
    return (uint32_t)floor(p.lambda);
}

/* K ~ Poisson(p.lambda) for (seed, element, batch, step) on owner_id's
 * streams (layout above), either method.  Returns the count.  Generated code
 * calls the method for its lambda directly. */
SF_HOSTDEV uint32_t sf_poisson(uint64_t seed, uint32_t element, uint32_t batch, uint32_t step,
                               uint32_t owner_id, const sf_poisson_params& p) {
    return p.lambda < SF_POISSON_INVERSION_MAX ? sf_poisson_inversion(seed, element, batch, step, owner_id, p)
                                               : sf_poisson_ptrs(seed, element, batch, step, owner_id, p);
}

#endif /* SPIKEFORGE_PHILOX_H */
