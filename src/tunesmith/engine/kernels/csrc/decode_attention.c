/* Single-query attention over a decode cache, for tunesmith's decoder step.
 *
 * For each of `groups` (row, head) pairs: scores = K q * scale over the first `length`
 * cached positions, softmax, out = sum_t p_t V_t. K and V are `length` rows of `dim` values,
 * `stride` values apart from one group to the next, float32 or bfloat16 (read as the top half
 * of a float32); the self-attention cache can also be int8 (`ROW_I8`). One pass over K and one
 * over V, reading each cached value once: decoding is bound by that read, and torch's general
 * attention kernel reads a one-query cache well below the memory bandwidth (and computes
 * bfloat16 slowly on CPUs without AVX-512 BF16).
 *
 * Built by tunesmith.engine.kernels.build with -O3, -ffast-math's parts and -fopenmp (vectorized dot
 * products, conversions and exp); large calls split groups across torch's own OpenMP threads.
 * The head size of every MusicGen checkpoint (64) has its own AVX2 version (`DEFINE_ATTEND64`).
 */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tunesmith.h"

static inline float from_f32(float x) { return x; }

static inline float from_bf16(uint16_t x) {
    uint32_t bits = (uint32_t)x << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

/* p[t] = exp(p[t] - top) over the scores (vectorized: libmvec's expf); returns their sum. */
static inline float exponentiate(float *restrict p, long length, float top) {
    float total = 0.0f;
#pragma omp simd reduction(+ : total)
    for (long t = 0; t < length; t++) {
        p[t] = expf(p[t] - top);
        total += p[t];
    }
    return total;
}

/* Rounds q (dim <= 256 values) to int16 steps of its largest magnitude / 32767 (`rounded`);
 * returns the step. Against int8 keys (a step of 1/127 of theirs) the query's rounding is ~1 %
 * of the keys', and it lets a key's products be summed exactly in integers (`scores64_i8`). */
static inline float round_query(const float *restrict q, long dim, int16_t *restrict rounded) {
    float largest = 0.0f;
    for (long d = 0; d < dim; d++) largest = fmaxf(largest, fabsf(q[d]));
    const float inverse = largest > 0.0f ? 32767.0f / largest : 0.0f;
    for (long d = 0; d < dim; d++) rounded[d] = (int16_t)lrintf(q[d] * inverse);
    return largest / 32767.0f;
}

/* The query a cache's keys are scored against: itself for float32 and bfloat16; for int8
 * caches, its int16 steps (`round_query`) as floats, in `buffer`. */
static inline const float *query_plain(const float *q, long dim, float *buffer) {
    (void)dim, (void)buffer;
    return q;
}

static inline const float *query_int16(const float *q, long dim, float *buffer) {
    int16_t rounded[256];
    const float step = round_query(q, dim, rounded);
    for (long d = 0; d < dim; d++) buffer[d] = (float)rounded[d] * step;
    return buffer;
}

/* Cache rows: `ROW(dim)` values apart, each scaled by `ROW_SCALE(row, dim)` (int8, below; 1 for
 * float32 and bfloat16, whose rows are their values). */
#define ROW_PLAIN(dim) (dim)
#define NO_SCALE(row, dim) 1.0f

#define DEFINE_ATTEND(NAME, T, LOAD, ROW, ROW_SCALE, QUERY)                                     \
    static inline __attribute__((always_inline)) void NAME(                                     \
        const float *restrict q_in, const T *restrict k, const T *restrict v,                   \
        float *restrict out, float *restrict p, long length, const long dim, float scale) {     \
        const long row = ROW(dim);                                                              \
        float buffer[256];                                                                      \
        const float *restrict q = QUERY(q_in, dim, buffer);                                     \
        float top = -FLT_MAX;                                                                   \
        for (long t = 0; t < length; t++) {                                                     \
            const T *restrict kt = k + t * row;                                                 \
            float dot = 0.0f;                                                                   \
            _Pragma("omp simd reduction(+ : dot)") for (long d = 0; d < dim; d++) dot +=        \
                q[d] * LOAD(kt[d]);                                                             \
            p[t] = dot * ROW_SCALE(kt, dim) * scale;                                            \
            top = p[t] > top ? p[t] : top;                                                      \
        }                                                                                       \
        const float total = exponentiate(p, length, top);                                       \
        float acc[256];                                                                         \
        for (long d = 0; d < dim; d++) acc[d] = 0.0f;                                           \
        for (long t = 0; t < length; t++) {                                                     \
            const T *restrict vt = v + t * row;                                                 \
            const float weight = p[t] * ROW_SCALE(vt, dim);                                     \
            _Pragma("omp simd") for (long d = 0; d < dim; d++) acc[d] += weight * LOAD(vt[d]);  \
        }                                                                                       \
        const float inverse = 1.0f / total;                                                     \
        for (long d = 0; d < dim; d++) out[d] = acc[d] * inverse;                               \
    }

/* An int8 cache row: a key's or value's `dim` values rounded to int8 against their largest
 * magnitude, then that row's float32 scale (value = scale x int8), unaligned, in its last 4
 * bytes. 68 bytes for MusicGen's 64 values against 128 in bfloat16: late in a long track the
 * cache is the larger part of what a step reads. */
#define SCALE_BYTES TS_SCALE_BYTES
#define ROW_I8(dim) ((dim) + SCALE_BYTES)

static inline float row_scale(const int8_t *row, long dim) {
    float scale;
    memcpy(&scale, row + dim, sizeof scale);
    return scale;
}

static inline float from_i8(int8_t x) { return (float)x; }

DEFINE_ATTEND(attend_f32, float, from_f32, ROW_PLAIN, NO_SCALE, query_plain)
DEFINE_ATTEND(attend_bf16, uint16_t, from_bf16, ROW_PLAIN, NO_SCALE, query_plain)
DEFINE_ATTEND(attend_i8, int8_t, from_i8, ROW_I8, row_scale, query_int16)

/* The head size of every MusicGen checkpoint (64), vectorized by hand for AVX2: the loops above
 * reduce each key's dot product across lanes on its own and reload their sums, which leaves
 * them compute-bound on a batch's cache, float32 and bfloat16 alike. Here four keys' dot
 * products are reduced together (one horizontal tree per four keys), the values' sums stay in
 * eight registers, and bfloat16 is widened sixteen values per two unpacks: a key's 64 values
 * are held in a fixed lane order (`order_bf16`), the query permuted to match and the output
 * permuted back. */
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>

#define HEAD 64
#define CHUNKS (HEAD / 8)

/* chunk c of a float32 key or value row */
static inline __m256 chunk_f32(const float *row, int c) { return _mm256_loadu_ps(row + 8 * c); }

/* chunk c of a bfloat16 row: 16 values per load, unpacked into the top halves of float32 lanes
 * (their low halves zero: the exact float32), in the order order_bf16 gives */
static inline __m256 chunk_bf16(const uint16_t *row, int c) {
    const __m256i raw = _mm256_loadu_si256((const __m256i *)(row + 16 * (c / 2)));
    const __m256i zero = _mm256_setzero_si256();
    return _mm256_castsi256_ps(c % 2 == 0 ? _mm256_unpacklo_epi16(zero, raw)
                                          : _mm256_unpackhi_epi16(zero, raw));
}

/* lane i of the concatenated chunks holds value order(i) of the row */
static inline int order_f32(int i) { return i; }
static inline int order_bf16(int i) {
    const int pair = i / 16, within = i % 16, half = within / 8, lane = within % 8;
    return 16 * pair + (lane / 4) * 8 + half * 4 + lane % 4;
}

/* Scores of float32 or bfloat16 keys (ROW values apart): p[t] = scale * q . k_t, each four
 * keys' products reduced together; returns the largest. (`values`: see `scores64_i8`.) */
#define DEFINE_SCORES64(NAME, T, CHUNK, ORDER, ROW)                                             \
    static float NAME(const float *restrict q, const T *restrict k, float *restrict p,          \
                      long length, float scale, const T *values) {                              \
        (void)values;                                                                           \
        const long row = ROW(HEAD);                                                             \
        float permuted[HEAD];                                                                   \
        for (int i = 0; i < HEAD; i++) permuted[i] = q[ORDER(i)] * scale;                       \
        __m256 qc[CHUNKS];                                                                      \
        for (int c = 0; c < CHUNKS; c++) qc[c] = _mm256_loadu_ps(permuted + 8 * c);             \
        __m128 top4 = _mm_set1_ps(-FLT_MAX);                                                    \
        long t = 0;                                                                             \
        for (; t + 4 <= length; t += 4) {                                                       \
            const T *kt = k + t * row;                                                          \
            __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                         \
            for (int c = 0; c < CHUNKS; c++) {                                                  \
                a0 = _mm256_fmadd_ps(qc[c], CHUNK(kt, c), a0);                                  \
                a1 = _mm256_fmadd_ps(qc[c], CHUNK(kt + row, c), a1);                            \
                a2 = _mm256_fmadd_ps(qc[c], CHUNK(kt + 2 * row, c), a2);                        \
                a3 = _mm256_fmadd_ps(qc[c], CHUNK(kt + 3 * row, c), a3);                        \
            }                                                                                   \
            const __m256 pairs =                                                                \
                _mm256_hadd_ps(_mm256_hadd_ps(a0, a1), _mm256_hadd_ps(a2, a3));                 \
            const __m128 scores =                                                               \
                _mm_add_ps(_mm256_castps256_ps128(pairs), _mm256_extractf128_ps(pairs, 1));     \
            _mm_storeu_ps(p + t, scores);                                                       \
            top4 = _mm_max_ps(top4, scores);                                                    \
        }                                                                                       \
        float top4s[4];                                                                         \
        _mm_storeu_ps(top4s, top4);                                                             \
        float top = fmaxf(fmaxf(top4s[0], top4s[1]), fmaxf(top4s[2], top4s[3]));                \
        for (; t < length; t++) {                                                               \
            const T *kt = k + t * row;                                                          \
            __m256 a = _mm256_setzero_ps();                                                     \
            for (int c = 0; c < CHUNKS; c++) a = _mm256_fmadd_ps(qc[c], CHUNK(kt, c), a);       \
            __m128 h = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));      \
            h = _mm_hadd_ps(h, h);                                                              \
            p[t] = _mm_cvtss_f32(_mm_hadd_ps(h, h));                                            \
            top = p[t] > top ? p[t] : top;                                                      \
        }                                                                                       \
        return top;                                                                             \
    }

/* out = sum_t p[t] v_t / total over `length` value rows (ROW values apart, each scaled by
 * ROW_SCALE), the sums in eight registers. PREFETCH: the rows of `next` (the keys the thread
 * reads next, or NULL) are prefetched into L2 meanwhile, a line a row (int8 rows: 68 bytes).
 * With the score pass's prefetch of the values, a thread keeps two streams in flight from
 * memory throughout. */
#define DEFINE_VALUES64(NAME, T, CHUNK, ORDER, ROW, ROW_SCALE, PREFETCH)                        \
    static void NAME(const T *restrict v, const float *restrict p, long length, float total,    \
                     float *restrict out, const T *next) {                                      \
        const long row = ROW(HEAD);                                                             \
        __m256 acc[CHUNKS];                                                                     \
        for (int c = 0; c < CHUNKS; c++) acc[c] = _mm256_setzero_ps();                          \
        for (long i = 0; i < length; i++) {                                                     \
            const T *vi = v + i * row;                                                          \
            if (PREFETCH && next != NULL)                                                       \
                _mm_prefetch((const char *)(next + i * row), _MM_HINT_T1);                      \
            const __m256 weight = _mm256_set1_ps(p[i] * ROW_SCALE(vi, HEAD));                   \
            for (int c = 0; c < CHUNKS; c++)                                                    \
                acc[c] = _mm256_fmadd_ps(weight, CHUNK(vi, c), acc[c]);                         \
        }                                                                                       \
        float sums[HEAD];                                                                       \
        for (int c = 0; c < CHUNKS; c++) _mm256_storeu_ps(sums + 8 * c, acc[c]);                \
        const float inverse = 1.0f / total;                                                     \
        for (int i = 0; i < HEAD; i++) out[ORDER(i)] = sums[i] * inverse;                       \
    }

/* `next`: the keys the thread attends to next, or NULL (see DEFINE_VALUES64) */
#define DEFINE_ATTEND64(NAME, T, SCORES, VALUES)                                                \
    static void NAME(const float *restrict q, const T *restrict k, const T *restrict v,         \
                     float *restrict out, float *restrict p, long length, float scale,          \
                     const T *next) {                                                           \
        const float top = SCORES(q, k, p, length, scale, v);                                    \
        VALUES(v, p, length, exponentiate(p, length, top), out, next);                          \
    }

/* chunk c of an int8 row, widened to float32 in order */
static inline __m256 chunk_i8(const int8_t *row, int c) {
    const __m128i raw = _mm_loadl_epi64((const __m128i *)(row + 8 * c));
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(raw));
}

/* the dot products of an int16 query (4 x 16 values) with the int8 key at `kt`, summed exactly
 * in eight int32 lanes (64 products of at most 32767 x 127 each: no overflow) */
static inline __m256i dot_i8(const __m256i qc[4], const int8_t *kt) {
    __m256i sum = _mm256_setzero_si256();
    for (int c = 0; c < 4; c++) {
        const __m128i raw = _mm_loadu_si128((const __m128i *)(kt + 16 * c));
        sum = _mm256_add_epi32(sum, _mm256_madd_epi16(qc[c], _mm256_cvtepi8_epi16(raw)));
    }
    return sum;
}

/* Scores of int8 keys: the query in int16 steps (`round_query`), each key's 64 products
 * summed exactly in int32 with vpmaddwd, eight keys' sums reduced together, then scaled by the
 * query's step and the key's scale. A key costs half the instructions of widening it to float
 * (which leaves this pass compute-bound, slower than the cores read from memory).
 *
 * Meanwhile the rows of `values` the next pass reads are prefetched into L2, so two streams
 * are in flight from memory instead of one: in a decode step the cache comes from memory (the
 * step's weights have streamed through L3 since). */
static float scores64_i8(const float *restrict q, const int8_t *restrict k, float *restrict p,
                         long length, float scale, const int8_t *values) {
    const long row = ROW_I8(HEAD);
    int16_t rounded[HEAD];
    const float step = round_query(q, HEAD, rounded) * scale;
    __m256i qc[4];
    for (int c = 0; c < 4; c++) qc[c] = _mm256_loadu_si256((const __m256i *)(rounded + 16 * c));
    float top = -FLT_MAX;
    long t = 0;
    for (; t + 8 <= length; t += 8) {
        const int8_t *kt = k + t * row;
        for (long b = 0; b < 8 * row; b += 64)
            _mm_prefetch((const char *)(values + t * row + b), _MM_HINT_T1);
        __m256i s[8];
        for (int r = 0; r < 8; r++) s[r] = dot_i8(qc, kt + r * row);
        /* hadd thrice: lane r of each 128-bit half holds key r's (then r + 4's) half sums */
        const __m256i h0 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[0], s[1]),
                                             _mm256_hadd_epi32(s[2], s[3]));
        const __m256i h1 = _mm256_hadd_epi32(_mm256_hadd_epi32(s[4], s[5]),
                                             _mm256_hadd_epi32(s[6], s[7]));
        const __m256i sums = _mm256_add_epi32(_mm256_permute2x128_si256(h0, h1, 0x20),
                                              _mm256_permute2x128_si256(h0, h1, 0x31));
        _mm256_storeu_ps(p + t, _mm256_mul_ps(_mm256_cvtepi32_ps(sums), _mm256_set1_ps(step)));
        for (int r = 0; r < 8; r++) {
            p[t + r] *= row_scale(kt + r * row, HEAD);
            top = p[t + r] > top ? p[t + r] : top;
        }
    }
    for (; t < length; t++) {
        const int8_t *kt = k + t * row;
        const __m256i s = dot_i8(qc, kt);
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        h = _mm_hadd_epi32(h, h);
        h = _mm_hadd_epi32(h, h);
        p[t] = (float)_mm_cvtsi128_si32(h) * step * row_scale(kt, HEAD);
        top = p[t] > top ? p[t] : top;
    }
    return top;
}

DEFINE_SCORES64(scores64_f32, float, chunk_f32, order_f32, ROW_PLAIN)
DEFINE_SCORES64(scores64_bf16, uint16_t, chunk_bf16, order_bf16, ROW_PLAIN)
DEFINE_VALUES64(values64_f32, float, chunk_f32, order_f32, ROW_PLAIN, NO_SCALE, 0)
DEFINE_VALUES64(values64_bf16, uint16_t, chunk_bf16, order_bf16, ROW_PLAIN, NO_SCALE, 0)
DEFINE_VALUES64(values64_i8_ymm, int8_t, chunk_i8, order_f32, ROW_I8, row_scale, 1)

/* The int8 values' pass in 512-bit registers where the CPU has AVX-512: sixteen values widened
 * and converted per instruction instead of eight. Each value's products are summed in the same
 * order as in `values64_i8_ymm`, so the outputs are identical. Widening bounds the 256-bit
 * pass (its eight vpmovsxbd a position all issue on one port), leaving it slower than the
 * score pass in integers. */
__attribute__((target("avx512f"))) static void values64_i8_zmm(const int8_t *restrict v,
                                                               const float *restrict p,
                                                               long length, float total,
                                                               float *restrict out,
                                                               const int8_t *next) {
    const long row = ROW_I8(HEAD);
    __m512 acc[HEAD / 16];
    for (int c = 0; c < HEAD / 16; c++) acc[c] = _mm512_setzero_ps();
    for (long i = 0; i < length; i++) {
        const int8_t *vi = v + i * row;
        if (next != NULL) _mm_prefetch((const char *)(next + i * row), _MM_HINT_T1);
        const __m512 weight = _mm512_set1_ps(p[i] * row_scale(vi, HEAD));
        for (int c = 0; c < HEAD / 16; c++) {
            const __m128i raw = _mm_loadu_si128((const __m128i *)(vi + 16 * c));
            acc[c] = _mm512_fmadd_ps(weight, _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(raw)), acc[c]);
        }
    }
    float sums[HEAD];
    for (int c = 0; c < HEAD / 16; c++) _mm512_storeu_ps(sums + 16 * c, acc[c]);
    const float inverse = 1.0f / total;
    for (int i = 0; i < HEAD; i++) out[i] = sums[i] * inverse;
}

typedef void (*values_i8_fn)(const int8_t *, const float *, long, float, float *,
                             const int8_t *);
static values_i8_fn chosen_values_i8 = NULL; /* NULL: not chosen yet (a benign race) */

static void values64_i8(const int8_t *restrict v, const float *restrict p, long length,
                        float total, float *restrict out, const int8_t *next) {
    if (chosen_values_i8 == NULL)
        chosen_values_i8 = __builtin_cpu_supports("avx512f") ? values64_i8_zmm : values64_i8_ymm;
    chosen_values_i8(v, p, length, total, out, next);
}

DEFINE_ATTEND64(attend64_f32, float, scores64_f32, values64_f32)
DEFINE_ATTEND64(attend64_bf16, uint16_t, scores64_bf16, values64_bf16)
DEFINE_ATTEND64(attend64_i8, int8_t, scores64_i8, values64_i8)
#else /* portable: the loops above, compiled for the head size (no prefetching: `next`) */
static void attend64_f32(const float *q, const float *k, const float *v, float *out, float *p,
                         long length, float scale, const float *next) {
    (void)next;
    attend_f32(q, k, v, out, p, length, 64, scale);
}
static void attend64_bf16(const float *q, const uint16_t *k, const uint16_t *v, float *out,
                          float *p, long length, float scale, const uint16_t *next) {
    (void)next;
    attend_bf16(q, k, v, out, p, length, 64, scale);
}
static void attend64_i8(const float *q, const int8_t *k, const int8_t *v, float *out, float *p,
                        long length, float scale, const int8_t *next) {
    (void)next;
    attend_i8(q, k, v, out, p, length, 64, scale);
}
#endif

/* Below this many cached values the work is smaller than waking a sleeping OpenMP thread
 * costs: cross-attention over a prompt, and self-attention in a track's first steps, run on the
 * calling thread alone. Above it the threads share the read of the cache, which comes from
 * memory (the step's weights have streamed through the caches since). */
#define PARALLEL_WORK (1L << 14)

/* Both entry points return 0, TS_ERROR_ALLOCATION if a scores buffer could not be allocated,
 * TS_ERROR_HEAD_DIM if dim > TS_MAX_HEAD_DIM. */
#define DEFINE_ENTRY(NAME, T, ATTEND, ATTEND64)                                                 \
    int NAME(const float *q, const T *k, const T *v, float *out, long groups, long length,      \
             long stride, long dim, float scale) {                                              \
        if (dim > TS_MAX_HEAD_DIM) return TS_ERROR_HEAD_DIM;                                    \
        int failed = 0;                                                                         \
        const int parallel = groups * length * dim >= PARALLEL_WORK;                            \
        _Pragma("omp parallel for schedule(static) reduction(| : failed) if (parallel)")        \
        for (long g = 0; g < groups; g++) {                                                     \
            float *p = malloc((size_t)length * sizeof(float));                                  \
            if (p == NULL) {                                                                    \
                failed = TS_ERROR_ALLOCATION;                                                   \
                continue;                                                                       \
            }                                                                                   \
            const T *kg = k + g * stride, *vg = v + g * stride;                                 \
            if (dim == 64)                                                                      \
                ATTEND64(q + g * dim, kg, vg, out + g * dim, p, length, scale, NULL);           \
            else                                                                                \
                ATTEND(q + g * dim, kg, vg, out + g * dim, p, length, dim, scale);              \
            free(p);                                                                            \
        }                                                                                       \
        return failed;                                                                          \
    }

DEFINE_ENTRY(decode_attention_f32, float, attend_f32, attend64_f32)
DEFINE_ENTRY(decode_attention_bf16, uint16_t, attend_bf16, attend64_bf16)

/* Self-attention of one decode step for a batch of jobs, with the step's keys and values
 * written into each job's cache first: one call per layer for the whole batch.
 *
 * Job j has rows[j] query rows in `qkv` (in job order; each row is q, k and v of heads * dim
 * values) and a cache `caches[j]` laid out as decode_attention reads it: keys (rows[j], heads,
 * T, dim) then values of the same shape, T = steps[j]. The step's keys and values go to
 * position ts[j]; each (row, head) then attends over positions 0..ts[j] and writes its `dim`
 * outputs to `out` (rows, heads * dim). bfloat16 caches store keys and values rounded to
 * nearest even, as torch's conversion does, int8 caches as `ROW_I8` says (T is then
 * ROW_I8(dim) bytes a position); each attends over the stored values. Returns 0,
 * TS_ERROR_ALLOCATION if a scores buffer could not be allocated, TS_ERROR_HEAD_DIM if
 * dim > TS_MAX_HEAD_DIM. */
static inline float store_f32(float x) { return x; }

static inline uint16_t store_bf16(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u); /* NaN */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

#define DEFINE_STORE_ROW(NAME, T, STORE)                                                        \
    static inline void NAME(const float *restrict x, T *restrict row, long dim) {               \
        for (long d = 0; d < dim; d++) row[d] = STORE(x[d]);                                    \
    }

DEFINE_STORE_ROW(store_row_f32, float, store_f32)
DEFINE_STORE_ROW(store_row_bf16, uint16_t, store_bf16)

/* to int8 against the row's largest magnitude, rounded to nearest, the scale after them */
static inline void store_row_i8(const float *restrict x, int8_t *restrict row, long dim) {
    float top = 0.0f;
    for (long d = 0; d < dim; d++) top = fmaxf(top, fabsf(x[d]));
    const float scale = top / 127.0f, inverse = top > 0.0f ? 127.0f / top : 0.0f;
    for (long d = 0; d < dim; d++) {
        const float scaled = fminf(fmaxf(x[d] * inverse, -127.0f), 127.0f);
        row[d] = (int8_t)lrintf(scaled);
    }
    memcpy(row + dim, &scale, sizeof scale);
}

#define DEFINE_SELF_ENTRY(NAME, T, ATTEND, ATTEND64, STORE_ROW, ROW)                            \
    int NAME(const float *qkv, float *out, long jobs, T *const *caches, const long *ts,         \
             const long *steps, const long *rows, long heads, long dim, float scale) {          \
        if (dim > TS_MAX_HEAD_DIM) return TS_ERROR_HEAD_DIM;                                    \
        long groups = 0, work = 0;                                                              \
        for (long j = 0; j < jobs; j++) {                                                       \
            groups += rows[j] * heads;                                                          \
            work += rows[j] * heads * (ts[j] + 1) * dim;                                        \
        }                                                                                       \
        /* per (row, head) group: its job, its row of qkv, its index among its job's groups */  \
        long *plan = malloc((size_t)(groups > 0 ? groups : 1) * 3 * sizeof(long));              \
        if (plan == NULL) return TS_ERROR_ALLOCATION;                                           \
        for (long j = 0, g = 0, row = 0; j < jobs; row += rows[j], j++)                         \
            for (long local = 0; local < rows[j] * heads; local++, g++) {                       \
                plan[3 * g] = j;                                                                \
                plan[3 * g + 1] = row + local / heads;                                          \
                plan[3 * g + 2] = local;                                                        \
            }                                                                                   \
        int failed = 0;                                                                         \
        const int parallel = work >= PARALLEL_WORK;                                             \
        const long width = heads * dim;                                                         \
        _Pragma("omp parallel for schedule(static) reduction(| : failed) if (parallel)")        \
        for (long g = 0; g < groups; g++) {                                                     \
            const long j = plan[3 * g], row = plan[3 * g + 1], local = plan[3 * g + 2];         \
            const long h = local % heads, t = ts[j], row_size = ROW(dim);                       \
            const long span = steps[j] * row_size;                                              \
            float *p = malloc((size_t)(t + 1) * sizeof(float));                                 \
            if (p == NULL) {                                                                    \
                failed = TS_ERROR_ALLOCATION;                                                   \
                continue;                                                                       \
            }                                                                                   \
            const float *q = qkv + row * 3 * width + h * dim;                                   \
            T *k = caches[j] + local * span, *v = k + rows[j] * heads * span;                   \
            STORE_ROW(q + width, k + t * row_size, dim); /* the step's key and value */         \
            STORE_ROW(q + 2 * width, v + t * row_size, dim);                                    \
            float *o = out + row * width + h * dim;                                             \
            if (dim == 64)                                                                      \
                ATTEND64(q, k, v, o, p, t + 1, scale,                                           \
                         local + 1 < rows[j] * heads ? k + span : NULL);                        \
            else                                                                                \
                ATTEND(q, k, v, o, p, t + 1, dim, scale);                                       \
            free(p);                                                                            \
        }                                                                                       \
        free(plan);                                                                             \
        return failed;                                                                          \
    }

DEFINE_SELF_ENTRY(self_attention_f32, float, attend_f32, attend64_f32, store_row_f32, ROW_PLAIN)
DEFINE_SELF_ENTRY(self_attention_bf16, uint16_t, attend_bf16, attend64_bf16, store_row_bf16,
                  ROW_PLAIN)
DEFINE_SELF_ENTRY(self_attention_i8, int8_t, attend_i8, attend64_i8, store_row_i8, ROW_I8)
