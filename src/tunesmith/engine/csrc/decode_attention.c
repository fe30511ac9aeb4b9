/* Single-query attention over a decode cache, for tunesmith's decoder step.
 *
 * For each of `groups` (row, head) pairs: scores = K q * scale over the first `length`
 * cached positions, softmax, out = sum_t p_t V_t. K and V are `length` rows of `dim` values,
 * `stride` values apart from one group to the next, float32 or bfloat16 (read as the top half
 * of a float32). One pass over K and one over V, reading each cached value once: decoding is
 * bound by that read, and torch's general attention kernel reads a one-query cache at about
 * half the memory bandwidth (and computes bfloat16 slowly on CPUs without AVX-512 BF16).
 *
 * Built by tunesmith.engine.attention with -O3 -ffast-math -fopenmp (vectorized dot
 * products, conversions and exp); large calls split groups across torch's own OpenMP threads. The
 * head size of every MusicGen checkpoint (64) gets a copy compiled for that size, with the
 * running sums in registers.
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static inline float from_f32(float x) { return x; }

static inline float from_bf16(uint16_t x) {
    uint32_t bits = (uint32_t)x << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

#define DEFINE_ATTEND(NAME, T, LOAD)                                                        \
    static inline void NAME(const float *restrict q, const T *restrict k,                  \
                            const T *restrict v, float *restrict out, float *restrict p,   \
                            long length, const long dim, float scale) {                    \
        float top = -FLT_MAX;                                                               \
        for (long t = 0; t < length; t++) {                                                \
            const T *restrict kt = k + t * dim;                                             \
            float dot = 0.0f;                                                               \
            _Pragma("omp simd reduction(+ : dot)") for (long d = 0; d < dim; d++) dot +=    \
                q[d] * LOAD(kt[d]);                                                         \
            p[t] = dot * scale;                                                             \
            top = p[t] > top ? p[t] : top;                                                  \
        }                                                                                   \
        float total = 0.0f;                                                                 \
        _Pragma("omp simd reduction(+ : total)") for (long t = 0; t < length; t++) {        \
            p[t] = expf(p[t] - top);                                                        \
            total += p[t];                                                                  \
        }                                                                                   \
        float acc[256];                                                                     \
        for (long d = 0; d < dim; d++) acc[d] = 0.0f;                                       \
        for (long t = 0; t < length; t++) {                                                \
            const T *restrict vt = v + t * dim;                                             \
            const float weight = p[t];                                                      \
            _Pragma("omp simd") for (long d = 0; d < dim; d++) acc[d] += weight * LOAD(vt[d]); \
        }                                                                                   \
        const float inverse = 1.0f / total;                                                 \
        for (long d = 0; d < dim; d++) out[d] = acc[d] * inverse;                           \
    }

DEFINE_ATTEND(attend_f32, float, from_f32)
DEFINE_ATTEND(attend_bf16, uint16_t, from_bf16)

/* Below this many cached values the work is smaller than waking a second thread costs (on a
 * 2-vCPU VM a sleeping OpenMP thread took ~250 us to join a region): cross-attention over a
 * prompt, and self-attention early in a track, run on the calling thread alone. */
#define PARALLEL_WORK (1L << 18)

/* Both entry points return 0, 1 if a scores buffer could not be allocated, 2 if dim > 256. */
#define DEFINE_ENTRY(NAME, T, ATTEND)                                                       \
    int NAME(const float *q, const T *k, const T *v, float *out, long groups, long length, \
             long stride, long dim, float scale) {                                          \
        if (dim > 256) return 2;                                                            \
        int failed = 0;                                                                     \
        const int parallel = groups * length * dim >= PARALLEL_WORK;                        \
        _Pragma("omp parallel for schedule(static) reduction(| : failed) if (parallel)")    \
        for (long g = 0; g < groups; g++) {                                                 \
            float *p = malloc((size_t)length * sizeof(float));                              \
            if (p == NULL) {                                                                \
                failed = 1;                                                                 \
                continue;                                                                   \
            }                                                                               \
            const T *kg = k + g * stride, *vg = v + g * stride;                             \
            if (dim == 64)                                                                  \
                ATTEND(q + g * dim, kg, vg, out + g * dim, p, length, 64, scale);           \
            else                                                                            \
                ATTEND(q + g * dim, kg, vg, out + g * dim, p, length, dim, scale);          \
            free(p);                                                                        \
        }                                                                                   \
        return failed;                                                                      \
    }

DEFINE_ENTRY(decode_attention_f32, float, attend_f32)
DEFINE_ENTRY(decode_attention_bf16, uint16_t, attend_bf16)
