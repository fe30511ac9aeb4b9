/* Weight-streaming matrix products for tunesmith's decoder step.
 *
 * y (rows, N) = x (rows, K) W^T for a weight W (N, K): float32 in the nn.Linear layout, or int8
 * (prepacked, below) with one float scale per output: y[:, n] = scale[n] * sum_k x[:, k] W[n, k].
 *
 * A decode step multiplies a few rows (two per guided request) by every weight once, so it is
 * bound by reading the weights: torch's mm reads a decoder-sized float32 weight at about half
 * the memory bandwidth of the 2-core AVX2 CPU for two rows. Here each thread streams its own
 * contiguous block of outputs, four weight rows at a time, against two activation rows held in
 * registers (8 accumulators); more rows re-read the four weight rows from L1/L2, not memory.
 * Every output is the same sum in the same order whatever the row count, so a request's result
 * does not depend on what it is batched with.
 *
 * Built by tunesmith.engine.native with -O3 -ffast-math -fopenmp (plus -mavx2 -mfma where the
 * CPU has them; without AVX2 the portable loops below are vectorized by the compiler).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#define TILE 4 /* outputs per tile: 4 weight rows x 2 activation rows of accumulators */

static inline long min_long(long a, long b) { return a < b ? a : b; }

#if defined(__AVX2__) && defined(__FMA__)
static inline float hsum(__m256 v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}
static inline __m256 load8_f32(const float *p) { return _mm256_loadu_ps(p); }

/* a[j] = xa . w_j and b[j] = xb . w_j for the TILE weight rows w_j = w[j] (each K long). */
#define DEFINE_TILE(NAME, T, LOAD8)                                                            \
    static void NAME(const float *xa, const float *xb, const T *const w[TILE], long K,        \
                     float a[TILE], float b[TILE]) {                                          \
        __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;                           \
        __m256 b0 = a0, b1 = a0, b2 = a0, b3 = a0;                                            \
        long k = 0;                                                                            \
        for (; k + 8 <= K; k += 8) {                                                           \
            __m256 va = _mm256_loadu_ps(xa + k), vb = _mm256_loadu_ps(xb + k);                \
            __m256 w0 = LOAD8(w[0] + k), w1 = LOAD8(w[1] + k);                                 \
            __m256 w2 = LOAD8(w[2] + k), w3 = LOAD8(w[3] + k);                                 \
            a0 = _mm256_fmadd_ps(va, w0, a0);                                                  \
            b0 = _mm256_fmadd_ps(vb, w0, b0);                                                  \
            a1 = _mm256_fmadd_ps(va, w1, a1);                                                  \
            b1 = _mm256_fmadd_ps(vb, w1, b1);                                                  \
            a2 = _mm256_fmadd_ps(va, w2, a2);                                                  \
            b2 = _mm256_fmadd_ps(vb, w2, b2);                                                  \
            a3 = _mm256_fmadd_ps(va, w3, a3);                                                  \
            b3 = _mm256_fmadd_ps(vb, w3, b3);                                                  \
        }                                                                                      \
        a[0] = hsum(a0), a[1] = hsum(a1), a[2] = hsum(a2), a[3] = hsum(a3);                   \
        b[0] = hsum(b0), b[1] = hsum(b1), b[2] = hsum(b2), b[3] = hsum(b3);                   \
        for (; k < K; k++) /* explicit fmaf: both rows round alike (gcc may contract one) */ \
            for (int j = 0; j < TILE; j++) {                                                   \
                a[j] = fmaf(xa[k], (float)w[j][k], a[j]);                                      \
                b[j] = fmaf(xb[k], (float)w[j][k], b[j]);                                      \
            }                                                                                  \
    }
DEFINE_TILE(tile_f32, float, load8_f32)
#else
#define DEFINE_TILE(NAME, T)                                                                   \
    static void NAME(const float *xa, const float *xb, const T *const w[TILE], long K,        \
                     float a[TILE], float b[TILE]) {                                          \
        for (int j = 0; j < TILE; j++) {                                                       \
            float sa = 0.0f, sb = 0.0f;                                                        \
            const T *wj = w[j];                                                                \
            _Pragma("omp simd reduction(+ : sa, sb)") for (long k = 0; k < K; k++) {           \
                sa += xa[k] * (float)wj[k];                                                    \
                sb += xb[k] * (float)wj[k];                                                    \
            }                                                                                  \
            a[j] = sa, b[j] = sb;                                                              \
        }                                                                                      \
    }
DEFINE_TILE(tile_f32, float)
#endif

/* Outputs [n, n + count) (count <= TILE) of every row: y[r * N + j] for the weight rows
 * `w` (count rows, K apart; a short tile repeats its last row and drops those sums). */
#define DEFINE_ROWS(NAME, T, TILE_FN)                                                          \
    static void NAME(const float *x, long rows, const T *w, long K, long count,               \
                     const float *scale, float *y, long N) {                                   \
        const T *wj[TILE];                                                                     \
        for (int j = 0; j < TILE; j++) wj[j] = w + min_long(j, count - 1) * K;                 \
        for (long r = 0; r < rows; r += 2) {                                                   \
            const float *xa = x + r * K, *xb = r + 1 < rows ? xa + K : xa;                     \
            float a[TILE], b[TILE];                                                            \
            TILE_FN(xa, xb, wj, K, a, b);                                                      \
            for (long j = 0; j < count; j++) {                                                 \
                float s = scale ? scale[j] : 1.0f;                                             \
                y[r * N + j] = a[j] * s;                                                       \
                if (r + 1 < rows) y[(r + 1) * N + j] = b[j] * s;                               \
            }                                                                                  \
        }                                                                                      \
    }
DEFINE_ROWS(rows_f32, float, tile_f32)

/* Below this many weights a call runs on the calling thread (waking the second costs more). */
#define PARALLEL_WEIGHTS (1L << 16)

int matvec_f32(const float *x, const float *w, float *y, long rows, long K, long N) {
#pragma omp parallel for schedule(static) if (N * K >= PARALLEL_WEIGHTS)
    for (long n = 0; n < N; n += TILE)
        rows_f32(x, rows, w + n * K, K, min_long(TILE, N - n), 0, y + n, N);
    return 0;
}


/* int8 weights, prepacked by tunesmith.engine.kernels as (ceil(N / 4), Kp / 16, 4, 16): tile
 * n's four weight rows interleaved 16 values at a time, so each thread reads one sequential
 * stream (four rows read side by side ran at a third of the memory bandwidth; the packed
 * stream at ~70 %). Kp is K rounded up to 16 and N up to 4, the padding zero.
 *
 * Each activation row is rounded to int16 against its own max-abs, and the products summed
 * exactly in int32 (vpmaddwd: 16 weights per instruction per row; widening each weight to float
 * costs twice the instructions, and the CPU has time for about one of the two at memory speed).
 * The int16 step is chosen so that no int32 lane can overflow: Kp / 8 products of at most
 * 127 * limit each; lanes are totalled in 64 bits. Integer sums are exact, so every output is
 * the same whatever the row count, the order or the threads. */
#define CHUNK 16

static long int16_limit(long Kp) {
    long limit = 2147483647L / (Kp / 8 * 127 + 1);
    return limit < 32767 ? limit : 32767;
}

#if defined(__AVX2__) && defined(__FMA__)
static inline int64_t hsum_i32(__m256i v) {
    int32_t lanes[8];
    _mm256_storeu_si256((__m256i *)lanes, v);
    int64_t total = 0;
    for (int i = 0; i < 8; i++) total += lanes[i];
    return total;
}
static inline __m256i load16_i8(const int8_t *p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
}
#define MADD(acc, x, w) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, w))

static void tile_q(const int16_t *xa, const int16_t *xb, const int8_t *w, long Kp,
                   int64_t a[TILE], int64_t b[TILE]) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0, a2 = a0, a3 = a0;
    __m256i b0 = a0, b1 = a0, b2 = a0, b3 = a0;
    for (long k = 0; k < Kp; k += CHUNK, w += TILE * CHUNK) {
        _mm_prefetch((const char *)(w + 1024), _MM_HINT_T0); /* measured: +5-10 % */
        __m256i va = _mm256_loadu_si256((const __m256i *)(xa + k));
        __m256i vb = _mm256_loadu_si256((const __m256i *)(xb + k));
        __m256i w0 = load16_i8(w), w1 = load16_i8(w + CHUNK);
        __m256i w2 = load16_i8(w + 2 * CHUNK), w3 = load16_i8(w + 3 * CHUNK);
        MADD(a0, va, w0), MADD(b0, vb, w0), MADD(a1, va, w1), MADD(b1, vb, w1);
        MADD(a2, va, w2), MADD(b2, vb, w2), MADD(a3, va, w3), MADD(b3, vb, w3);
    }
    a[0] = hsum_i32(a0), a[1] = hsum_i32(a1), a[2] = hsum_i32(a2), a[3] = hsum_i32(a3);
    b[0] = hsum_i32(b0), b[1] = hsum_i32(b1), b[2] = hsum_i32(b2), b[3] = hsum_i32(b3);
}
#else
static void tile_q(const int16_t *xa, const int16_t *xb, const int8_t *w, long Kp,
                   int64_t a[TILE], int64_t b[TILE]) {
    for (int j = 0; j < TILE; j++) a[j] = b[j] = 0;
    for (long k = 0; k < Kp; k += CHUNK, w += TILE * CHUNK)
        for (int j = 0; j < TILE; j++) {
            int32_t sa = 0, sb = 0;
            for (int i = 0; i < CHUNK; i++) {
                sa += (int32_t)xa[k + i] * w[j * CHUNK + i];
                sb += (int32_t)xb[k + i] * w[j * CHUNK + i];
            }
            a[j] += sa, b[j] += sb;
        }
}
#endif

/* Rounds each row of x (rows, K) to int16 in xq (rows, Kp, zero-padded); xs[r] is its step. */
static void quantize_rows(const float *x, long rows, long K, long Kp, int16_t *xq, float *xs) {
    const float limit = (float)int16_limit(Kp);
    for (long r = 0; r < rows; r++) {
        const float *row = x + r * K;
        float top = 0.0f;
        for (long k = 0; k < K; k++) top = fmaxf(top, fabsf(row[k]));
        float inverse = top > 0.0f ? limit / top : 0.0f;
        xs[r] = top / limit;
        for (long k = 0; k < K; k++) xq[r * Kp + k] = (int16_t)lrintf(row[k] * inverse);
        for (long k = K; k < Kp; k++) xq[r * Kp + k] = 0;
    }
}

int matvec_i8(const float *x, const int8_t *w, const float *scale, float *y, long rows, long K,
              long N) {
    const long Kp = (K + CHUNK - 1) / CHUNK * CHUNK;
    int16_t *xq = malloc(sizeof(int16_t) * rows * Kp);
    float *xs = malloc(sizeof(float) * rows);
    if (!xq || !xs) {
        free(xq), free(xs);
        return 1;
    }
    quantize_rows(x, rows, K, Kp, xq, xs);
#pragma omp parallel for schedule(static) if (N * K >= PARALLEL_WEIGHTS)
    for (long n = 0; n < N; n += TILE) {
        const long count = min_long(TILE, N - n);
        for (long r = 0; r < rows; r += 2) {
            const int16_t *xa = xq + r * Kp, *xb = r + 1 < rows ? xa + Kp : xa;
            int64_t a[TILE], b[TILE];
            tile_q(xa, xb, w + n * Kp, Kp, a, b);
            for (long j = 0; j < count; j++) {
                y[r * N + n + j] = (float)a[j] * (xs[r] * scale[n + j]);
                if (r + 1 < rows) y[(r + 1) * N + n + j] = (float)b[j] * (xs[r + 1] * scale[n + j]);
            }
        }
    }
    free(xq), free(xs);
    return 0;
}
