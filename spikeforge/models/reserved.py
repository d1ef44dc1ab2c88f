"""Names a model may not give its parameters and variables, and why.

A parameter ``tau_m`` becomes ``const scalar tau_m = 20.0f;`` in the generated C++/CUDA, a
variable ``v`` a local ``scalar v``. A name is refused where it would break that code:

* C and C++ keywords, and the alternative operator spellings (``and``, ``not_eq``...);
* macros of the headers the generated code includes, which no declaration can shadow
  (``INFINITY``, ``NAN``, ``M_PI``, ``assert``, ``INT32_MAX``...), and CUDA's built-in
  variables (``threadIdx``, ``blockIdx``, ``blockDim``, ``gridDim``, ``warpSize``; macros in
  the cuda-emu header);
* types and functions the generated code uses: ``<math.h>``'s functions in their double,
  ``f`` and ``l`` forms (any of them can be printed from an equation), ``<stdint.h>``'s
  types, ``size_t``, ``memcpy``/``memset``, CUDA's atomics, ``dim3``;
* identifiers the templates declare where model code runs: ``scalar``, ``ctx``, ``dt``, ``t``,
  ``std``, ``KAPPA``, ``N_IN``, ``N_H``, ``N_OUT``;
* the names of the model language itself: its functions and ``pi``, ``t`` and ``dt``, and
  ``i_syn``, ``in_syn``, ``post_input``;
* anything beginning with ``_`` (generated temporaries: ``_i``, ``_b``, ``_h0``...; and
  names C++ reserves), ``sf_``, ``SF_`` or ``omp_``.
"""

from __future__ import annotations

import keyword
import re

#: The functions and constants of the model language (the keys of ``functions.FUNCTIONS`` and
#: ``functions.CONSTANTS``), named here so that checking a name needs no sympy.
_LANGUAGE_FUNCTIONS = frozenset("""
exp expm1 exprel log log1p sqrt sin cos tan tanh abs min max clip where floor ceil heaviside rand_uniform
rand_normal rand randn pi
""".split())

_CXX_KEYWORDS = set("""
alignas alignof and and_eq asm auto bitand bitor bool break case catch char char8_t char16_t char32_t
class compl concept const consteval constexpr constinit const_cast continue co_await co_return co_yield
decltype default delete do double dynamic_cast else enum explicit export extern false float for friend
goto if inline int long mutable namespace new noexcept not not_eq nullptr operator or or_eq private
protected public register reinterpret_cast requires return short signed sizeof static static_assert
static_cast struct switch template this thread_local throw true try typedef typeid typename union
unsigned using virtual void volatile wchar_t while xor xor_eq restrict final override
""".split())

_MATH_FUNCTIONS = """
acos asin atan atan2 cos sin tan acosh asinh atanh cosh sinh tanh exp exp2 expm1 frexp ldexp log log10
log1p log2 logb ilogb modf scalbn scalbln cbrt fabs hypot pow sqrt erf erfc lgamma tgamma ceil floor
nearbyint rint lrint llrint round lround llround trunc fmod remainder remquo copysign nan nextafter
nexttoward fdim fmax fmin fma rsqrt rcbrt exp10 sincos sinpi cospi sincospi erfinv erfcinv normcdf
normcdfinv fdivide
""".split()
_MATH_NAMES = {f + suffix for f in _MATH_FUNCTIONS for suffix in ("", "f", "l")}
_MATH_NAMES |= set("isnan isinf isfinite isnormal signbit fpclassify isgreater isgreaterequal isless "
                   "islessequal islessgreater isunordered abs labs llabs div ldiv lldiv".split())

_MACROS = set("""
INFINITY NAN HUGE_VAL HUGE_VALF HUGE_VALL MATH_ERRNO MATH_ERREXCEPT math_errhandling errno assert NULL EOF
offsetof RAND_MAX EXIT_SUCCESS EXIT_FAILURE CHAR_BIT SIZE_MAX BUFSIZ
threadIdx blockIdx blockDim gridDim warpSize
""".split())
_MACRO_PATTERN = re.compile(
    r"^(M_[A-Z0-9_]+[fl]?|FLT_\w+|DBL_\w+|LDBL_\w+|FP_\w+|U?INT(8|16|32|64|MAX|PTR)_(MAX|MIN|C)|"
    r"U?INT_(LEAST|FAST)(8|16|32|64)_(MAX|MIN)|PTRDIFF_\w+|(S?CHAR|U?SHRT|U?INT|U?LONG|U?LLONG)_(MAX|MIN))$"
)

_TYPES_AND_CALLS = set("""
size_t ptrdiff_t ssize_t intptr_t uintptr_t intmax_t uintmax_t int8_t int16_t int32_t int64_t
uint8_t uint16_t uint32_t uint64_t dim3 uint3 memcpy memset memmove printf malloc free
atomicAdd atomicSub atomicExch atomicMin atomicMax atomicInc atomicDec atomicCAS atomicAnd atomicOr atomicXor
""".split())

_GENERATED = {"scalar", "ctx", "std", "KAPPA", "N_IN", "N_H", "N_OUT"}
_LANGUAGE = {"t", "dt", "i_syn", "in_syn", "post_input"}
_PREFIXES = ("_", "sf_", "SF_", "omp_")


def reserved_reason(name: str) -> str | None:
    """Why ``name`` cannot name a parameter or variable, or None if it can."""
    if name.startswith(_PREFIXES):
        prefix = next(p for p in _PREFIXES if name.startswith(p))
        return f"names beginning with '{prefix}' are reserved for generated code"
    if name in _LANGUAGE:
        return "it is a name of the model language (t, dt, i_syn, in_syn, post_input)"
    if name in _LANGUAGE_FUNCTIONS:
        return "it is a function or constant of the model language"
    if name in _CXX_KEYWORDS or keyword.iskeyword(name):
        return "it is a C++ (or Python) keyword"
    if name in _MACROS or _MACRO_PATTERN.match(name):
        return "it is a C/CUDA macro or built-in variable"
    if name in _MATH_NAMES:
        return "it is a C math function"
    if name in _TYPES_AND_CALLS:
        return "it is a type or function the generated code uses"
    if name in _GENERATED:
        return "the generated code declares it"
    return None
