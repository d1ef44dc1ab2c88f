/*
 * sf_math.h -- functions of spikeforge's model language that <math.h> lacks,
 * for the generated C++ and CUDA alike (float and double versions).
 *
 *   sf_exprel(x)       = (exp(x) - 1) / x, and 1 at x = 0: a removable
 *                        singularity, computed as expm1(x) / x (a few ulp of
 *                        relative error everywhere, never 0/0). Rate functions
 *                        written  c * X / (exp(X / k) - 1)  are printed as
 *                        c * k / sf_exprel(X / k).
 *   sf_exprel_prime(x) = d/dx exprel(x) = (x exp(x) - exp(x) + 1) / x^2, and
 *                        1/2 at x = 0 (sympy's derivative of exprel, e.g. in
 *                        e-prop Jacobians): its Taylor series for |x| < 1/2,
 *                        the closed form elsewhere.
 *
 * No Jinja2 syntax here: the templates include this file as it is.
 */
#ifndef SPIKEFORGE_MATH_H
#define SPIKEFORGE_MATH_H

#include <math.h>

#ifndef SF_HOSTDEV
#ifdef __CUDACC__
#define SF_HOSTDEV __host__ __device__ __forceinline__
#else
#define SF_HOSTDEV static inline
#endif
#endif

SF_HOSTDEV double sf_exprel(double x) {
    return x == 0.0 ? 1.0 : expm1(x) / x;
}

SF_HOSTDEV float sf_exprelf(float x) {
    return x == 0.0f ? 1.0f : expm1f(x) / x;
}

/* sum over n >= 1 of n x^(n-1) / (n+1)!, for |x| < 1/2 (terms below 1e-17 relative) */
SF_HOSTDEV double sf_exprel_prime(double x) {
    if (fabs(x) < 0.5) {
        double term = 0.5, sum = 0.0;  /* term = x^(n-1) / (n+1)! */
        for (int n = 1; n <= 16; ++n) {
            sum += n * term;
            term *= x / (n + 2);
        }
        return sum;
    }
    return (x * exp(x) - expm1(x)) / (x * x);
}

SF_HOSTDEV float sf_exprel_primef(float x) {
    if (fabsf(x) < 0.5f) {
        float term = 0.5f, sum = 0.0f;
        for (int n = 1; n <= 9; ++n) {
            sum += n * term;
            term *= x / (n + 2);
        }
        return sum;
    }
    return (x * expf(x) - expm1f(x)) / (x * x);
}

#endif /* SPIKEFORGE_MATH_H */
