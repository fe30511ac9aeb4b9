/* Weight-streaming matrix products for tunesmith's decoder step.
 *
 * y (rows, N) = x (rows, K) W^T for a weight W (N, K): float32 in the nn.Linear layout, or int8
 * (prepacked, below) with one float scale per output: y[:, n] = scale[n] * sum_k x[:, k] W[n, k];
 * optionally followed by a GELU (`matvec_activate`).
 *
 * A decode step multiplies a few rows (two per guided request) by every weight once, so it is
 * bound by reading the weights: torch's mm reads a decoder-sized float32 weight for two rows
 * well below the memory bandwidth. Here each thread streams its own contiguous block of
 * outputs, four weight rows at a time, against two activation rows held in registers (8
 * accumulators); further pairs of rows re-read the tile's weight rows from cache. Every lane of
 * every output accumulates the same products in the same order whatever the row count, so a
 * request's result does not depend on what it is batched with.
 *
 * Built by tunesmith.engine.kernels.build with -O3, -ffast-math's parts and -fopenmp (plus -mavx2 -mfma
 * where the CPU has them; without AVX2 the portable loops below are vectorized by the
 * compiler).
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>

#include "matvec.h"
#include "tunesmith.h"
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#define TILE TS_TILE   /* outputs per tile: 4 weight rows x 2 activation rows of accumulators */
#define LANES 8        /* float32 / int32 lanes per accumulator */
#define CHUNK TS_CHUNK /* int8: K per packed chunk (see below) */
#define BLOCK_I8 512   /* 4 int8 weight rows (2 KB) + 16 int16 activation rows (16 KB) */
/* int8: bytes ahead of the weight stream to prefetch, far enough to cover the longer memory
 * latency of server CPUs. */
#define PREFETCH_I8 4096
/* float32: values ahead of each weight row's stream to prefetch (the rows of a tile are read
 * side by side, four streams a thread, which the hardware prefetchers follow less far) */
#define PREFETCH_F32 512

#if defined(__AVX2__) && defined(__FMA__)
typedef __m256 vf;
typedef __m256i vi;
static inline vf vf_zero(void) { return _mm256_setzero_ps(); }
static inline vi vi_zero(void) { return _mm256_setzero_si256(); }
static inline float vf_sum(vf v) {
    __m128 lo = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    lo = _mm_add_ps(lo, _mm_movehl_ps(lo, lo));
    lo = _mm_add_ss(lo, _mm_movehdup_ps(lo));
    return _mm_cvtss_f32(lo);
}
static inline int64_t vi_sum(vi v) { /* in 64 bits: the lanes' total may not fit 32 */
    int32_t lanes[LANES];
    _mm256_storeu_si256((__m256i *)lanes, v);
    int64_t total = 0;
    for (int i = 0; i < LANES; i++) total += lanes[i];
    return total;
}
#define MULADD(x, w, acc) fmaf(x, w, acc) /* as the vector loop rounds: one rounding */

/* acc[j] += xa * w_j and acc[TILE + j] += xb * w_j, lane by lane, over k in [0, K8). */
static void dot_f32(const float *xa, const float *xb, const float *const w[TILE], long K8,
                    vf *acc) {
    vf a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    vf b0 = acc[4], b1 = acc[5], b2 = acc[6], b3 = acc[7];
    for (long k = 0; k < K8; k += LANES) {
        if (k % 16 == 0)  /* one cache line of each row every other pass */
            for (int j = 0; j < TILE; j++)
                _mm_prefetch((const char *)(w[j] + k + PREFETCH_F32), _MM_HINT_T0);
        vf va = _mm256_loadu_ps(xa + k), vb = _mm256_loadu_ps(xb + k);
        vf w0 = _mm256_loadu_ps(w[0] + k), w1 = _mm256_loadu_ps(w[1] + k);
        vf w2 = _mm256_loadu_ps(w[2] + k), w3 = _mm256_loadu_ps(w[3] + k);
        a0 = _mm256_fmadd_ps(va, w0, a0), b0 = _mm256_fmadd_ps(vb, w0, b0);
        a1 = _mm256_fmadd_ps(va, w1, a1), b1 = _mm256_fmadd_ps(vb, w1, b1);
        a2 = _mm256_fmadd_ps(va, w2, a2), b2 = _mm256_fmadd_ps(vb, w2, b2);
        a3 = _mm256_fmadd_ps(va, w3, a3), b3 = _mm256_fmadd_ps(vb, w3, b3);
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
    acc[4] = b0, acc[5] = b1, acc[6] = b2, acc[7] = b3;
}

/* The same for three activation rows (12 accumulators): for a batch, each weight value loaded
 * from cache serves three rows instead of two (the tile's weight rows are re-read from L2 for
 * every group of rows, and those reads, not the multiply-adds, bound many rows). */
static void dot3_f32(const float *const x[3], const float *const w[TILE], long K8, vf *acc) {
    vf a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];
    vf b0 = acc[4], b1 = acc[5], b2 = acc[6], b3 = acc[7];
    vf c0 = acc[8], c1 = acc[9], c2 = acc[10], c3 = acc[11];
    for (long k = 0; k < K8; k += LANES) {
        if (k % 16 == 0)
            for (int j = 0; j < TILE; j++)
                _mm_prefetch((const char *)(w[j] + k + PREFETCH_F32), _MM_HINT_T0);
        vf va = _mm256_loadu_ps(x[0] + k), vb = _mm256_loadu_ps(x[1] + k);
        vf vc = _mm256_loadu_ps(x[2] + k);
        vf w0 = _mm256_loadu_ps(w[0] + k);
        a0 = _mm256_fmadd_ps(va, w0, a0), b0 = _mm256_fmadd_ps(vb, w0, b0);
        c0 = _mm256_fmadd_ps(vc, w0, c0);
        vf w1 = _mm256_loadu_ps(w[1] + k);
        a1 = _mm256_fmadd_ps(va, w1, a1), b1 = _mm256_fmadd_ps(vb, w1, b1);
        c1 = _mm256_fmadd_ps(vc, w1, c1);
        vf w2 = _mm256_loadu_ps(w[2] + k);
        a2 = _mm256_fmadd_ps(va, w2, a2), b2 = _mm256_fmadd_ps(vb, w2, b2);
        c2 = _mm256_fmadd_ps(vc, w2, c2);
        vf w3 = _mm256_loadu_ps(w[3] + k);
        a3 = _mm256_fmadd_ps(va, w3, a3), b3 = _mm256_fmadd_ps(vb, w3, b3);
        c3 = _mm256_fmadd_ps(vc, w3, c3);
    }
    acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;
    acc[4] = b0, acc[5] = b1, acc[6] = b2, acc[7] = b3;
    acc[8] = c0, acc[9] = c1, acc[10] = c2, acc[11] = c3;
}

static inline vi load16_i8(const int8_t *p) {
    return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)p));
}
#define MADD(acc, x, w) acc = _mm256_add_epi32(acc, _mm256_madd_epi16(x, w))
/* vpdpwssd (AVX-512 VNNI): the pairs' products added to the accumulator in one instruction,
 * the same integers. A batch's int8 rows are compute-bound, so fewer instructions speed up many
 * rows (a few rows stay bound by memory). Chosen when the CPU has it (`block_q`), so one build
 * serves CPUs with and without. */
#define MADD_VNNI(acc, x, w) acc = _mm256_dpwssd_epi32(acc, x, w)

/* The same for int16 rows against a packed int8 tile, over k in [k0, k1) (vpmaddwd: 16 weights
 * per instruction). */
#define DEFINE_BLOCK_Q(NAME, MULADD, ATTRIBUTES)                                                \
    ATTRIBUTES static void NAME(const int16_t *xa, const int16_t *xb, const int8_t *tile,       \
                                long k0, long k1, vi *acc) {                                    \
        vi a0 = acc[0], a1 = acc[1], a2 = acc[2], a3 = acc[3];                                  \
        vi b0 = acc[4], b1 = acc[5], b2 = acc[6], b3 = acc[7];                                  \
        for (long k = k0; k < k1; k += CHUNK) {                                                 \
            const int8_t *w = tile + k * TILE;                                                  \
            _mm_prefetch((const char *)(w + PREFETCH_I8), _MM_HINT_T0);                         \
            vi va = _mm256_loadu_si256((const __m256i *)(xa + k));                              \
            vi vb = _mm256_loadu_si256((const __m256i *)(xb + k));                              \
            vi w0 = load16_i8(w), w1 = load16_i8(w + CHUNK);                                    \
            vi w2 = load16_i8(w + 2 * CHUNK), w3 = load16_i8(w + 3 * CHUNK);                    \
            MULADD(a0, va, w0), MULADD(b0, vb, w0), MULADD(a1, va, w1), MULADD(b1, vb, w1);     \
            MULADD(a2, va, w2), MULADD(b2, vb, w2), MULADD(a3, va, w3), MULADD(b3, vb, w3);     \
        }                                                                                       \
        acc[0] = a0, acc[1] = a1, acc[2] = a2, acc[3] = a3;                                     \
        acc[4] = b0, acc[5] = b1, acc[6] = b2, acc[7] = b3;                                     \
    }

DEFINE_BLOCK_Q(block_q_madd, MADD, )
DEFINE_BLOCK_Q(block_q_vnni, MADD_VNNI, __attribute__((target("avx512f,avx512vl,avx512vnni"))))

/* The same with 512-bit vpdpwssd (AVX-512 VNNI and BW): each register holds two weight rows'
 * 16 values (one 32-byte load of the packed chunk, widened), against a row's 16 activations in
 * both halves, so a chunk takes half the multiply-add instructions. Stored, the accumulators
 * are the 256-bit loop's (a's rows 0-3, then b's), and the integer sums are the same. Batches
 * gain most; a few rows stay bound by memory. */
#define TARGET_ZMM __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
TARGET_ZMM static void block_q_zmm(const int16_t *xa, const int16_t *xb, const int8_t *tile,
                                   long k0, long k1, vi *acc) {
    __m512i a01 = _mm512_loadu_si512(acc), a23 = _mm512_loadu_si512(acc + 2);
    __m512i b01 = _mm512_loadu_si512(acc + 4), b23 = _mm512_loadu_si512(acc + 6);
    for (long k = k0; k < k1; k += CHUNK) {
        const int8_t *w = tile + k * TILE;
        _mm_prefetch((const char *)(w + PREFETCH_I8), _MM_HINT_T0);
        const __m512i va = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xa + k)));
        const __m512i vb = _mm512_broadcast_i64x4(_mm256_loadu_si256((const __m256i *)(xb + k)));
        const __m512i w01 = _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)w));
        const __m512i w23 =
            _mm512_cvtepi8_epi16(_mm256_loadu_si256((const __m256i *)(w + 2 * CHUNK)));
        a01 = _mm512_dpwssd_epi32(a01, va, w01), a23 = _mm512_dpwssd_epi32(a23, va, w23);
        b01 = _mm512_dpwssd_epi32(b01, vb, w01), b23 = _mm512_dpwssd_epi32(b23, vb, w23);
    }
    _mm512_storeu_si512(acc, a01), _mm512_storeu_si512(acc + 2, a23);
    _mm512_storeu_si512(acc + 4, b01), _mm512_storeu_si512(acc + 6, b23);
}

typedef void (*block_fn)(const int16_t *, const int16_t *, const int8_t *, long, long, vi *);

static block_fn chosen_block = NULL; /* NULL: not chosen yet */

static int can_run_block(int variant) {
    const int vnni = __builtin_cpu_supports("avx512vnni") && __builtin_cpu_supports("avx512vl");
    return variant == 0 || (variant == 1 && vnni) ||
           (variant == 2 && vnni && __builtin_cpu_supports("avx512bw"));
}

/* the fastest of the three this CPU runs (its answer never changes: a benign race) */
static block_fn block_q_kernel(void) {
    if (chosen_block == NULL)
        chosen_block = can_run_block(2) ? block_q_zmm : can_run_block(1) ? block_q_vnni
                                                                          : block_q_madd;
    return chosen_block;
}

/* For tests: int8 products through `variant` (0: vpmaddwd, 1: 256-bit vpdpwssd, 2: 512-bit),
 * or -1 for this CPU's fastest again. Returns 0, or 1 where this CPU cannot run the variant. */
int matvec_i8_variant(int variant) {
    if (variant == -1) {
        chosen_block = NULL;
        return 0;
    }
    if (variant < 0 || variant > 2 || !can_run_block(variant)) return 1;
    chosen_block = variant == 2 ? block_q_zmm : variant == 1 ? block_q_vnni : block_q_madd;
    return 0;
}

const char *ts_kernels_isa(void) {
    return can_run_block(2) ? "avx512-vnni" : can_run_block(1) ? "avx512vl-vnni" : "avx2";
}

static void block_q(const int16_t *xa, const int16_t *xb, const int8_t *tile, long k0, long k1,
                    vi *acc) {
    block_q_kernel()(xa, xb, tile, k0, k1, acc);
}
#else /* portable: the same lanes in plain C (built with -ffp-contract=off: rows round alike) */
typedef struct {
    float lane[LANES];
} vf;
typedef struct {
    int32_t lane[LANES];
} vi;
static inline vf vf_zero(void) { return (vf){{0}}; }
static inline vi vi_zero(void) { return (vi){{0}}; }
static inline float vf_sum(vf v) {
    float total = 0.0f;
    for (int i = 0; i < LANES; i++) total += v.lane[i];
    return total;
}
static inline int64_t vi_sum(vi v) {
    int64_t total = 0;
    for (int i = 0; i < LANES; i++) total += v.lane[i];
    return total;
}
#define MULADD(x, w, acc) ((acc) + (x) * (w))

static void dot_f32(const float *xa, const float *xb, const float *const w[TILE], long K8,
                    vf *acc) {
    for (long k = 0; k < K8; k += LANES)
        for (int j = 0; j < TILE; j++)
            for (int i = 0; i < LANES; i++) {
                acc[j].lane[i] += xa[k + i] * w[j][k + i];
                acc[TILE + j].lane[i] += xb[k + i] * w[j][k + i];
            }
}

static void dot3_f32(const float *const x[3], const float *const w[TILE], long K8, vf *acc) {
    for (long k = 0; k < K8; k += LANES)
        for (int j = 0; j < TILE; j++)
            for (int i = 0; i < LANES; i++)
                for (int r = 0; r < 3; r++) acc[r * TILE + j].lane[i] += x[r][k + i] * w[j][k + i];
}

/* For tests: the portable build has one way to compute int8 products (variant 0). */
int matvec_i8_variant(int variant) { return variant == -1 || variant == 0 ? 0 : 1; }

const char *ts_kernels_isa(void) { return "portable"; }

static void block_q(const int16_t *xa, const int16_t *xb, const int8_t *tile, long k0, long k1,
                    vi *acc) {
    for (long k = k0; k < k1; k += CHUNK) {
        const int8_t *w = tile + k * TILE;
        for (int j = 0; j < TILE; j++)
            for (int i = 0; i < CHUNK; i++) { /* lane i / 2, as vpmaddwd pairs them */
                acc[j].lane[i / 2] += (int32_t)xa[k + i] * w[j * CHUNK + i];
                acc[TILE + j].lane[i / 2] += (int32_t)xb[k + i] * w[j * CHUNK + i];
            }
    }
}
#endif

/* The sums of `stored` rows (`x[i]` each) from their accumulators, with the last K % 8
 * products, into y. */
static void store_f32(const float *const x[3], long stored, const float *const w[TILE], long K8,
                      long K, long count, const vf *acc, float *y, long N) {
    for (long i = 0; i < stored; i++)
        for (long j = 0; j < count; j++) {
            float sum = vf_sum(acc[i * TILE + j]);
            for (long k = K8; k < K; k++) sum = MULADD(x[i][k], w[j][k], sum);
            y[i * N + j] = sum;
        }
}

/* float32: outputs [n, n + count) (count <= TILE) of every row, y[r * N + j], from the weight
 * rows at `w` (count rows, K apart; a short tile repeats its last row and drops those sums).
 * Rows go three at a time (`dot3_f32`) and the rest two at a time (four as two pairs): every
 * lane of every output accumulates the same products in the same order either way. Each group
 * of rows runs over the whole of K: unlike int8, float32 gains nothing from L1-sized blocks of
 * K (its rows stream from L2 fast enough, and each block costs a reload of the accumulators). */
static void tile_f32(const float *x, long rows, const float *w, long K, long count, float *y,
                     long N) {
    const float *wj[TILE];
    for (int j = 0; j < TILE; j++) wj[j] = w + min_long(j, count - 1) * K;
    const long K8 = K / LANES * LANES;
    for (long r = 0; r < rows;) {
        const long left = rows - r;
        vf acc[3 * TILE];
        for (int i = 0; i < 3 * TILE; i++) acc[i] = vf_zero();
        if (left >= 3 && left != 4) {
            const float *xs[3] = {x + r * K, x + (r + 1) * K, x + (r + 2) * K};
            dot3_f32(xs, wj, K8, acc);
            store_f32(xs, 3, wj, K8, K, count, acc, y + r * N, N);
            r += 3;
        } else {
            const float *xs[3] = {x + r * K, left > 1 ? x + (r + 1) * K : x + r * K, NULL};
            dot_f32(xs[0], xs[1], wj, K8, acc);
            store_f32(xs, min_long(left, 2), wj, K8, K, count, acc, y + r * N, N);
            r += 2;
        }
    }
}

/* The activation applied to the products, fused into the call (an elementwise torch op after a
 * matvec is slow for its size: its code and data come back from memory after the weights have
 * streamed through the caches). Eight outputs at a time, each eight of a row the same way
 * whatever the batch (glibc's vector erff / tanhf, from libmvec, and its scalar ones round
 * differently: a loop over all outputs would give a column one or the other depending on where
 * its row starts). Codes: TS_ACTIVATION_* (tunesmith.h). */

static inline void activate8(float *v, int activation) {
    if (activation == TS_ACTIVATION_GELU) {
#pragma omp simd simdlen(8)
        for (int i = 0; i < 8; i++) v[i] = 0.5f * v[i] * (1.0f + erff(v[i] * 0.70710678118654752f));
    } else {
#pragma omp simd simdlen(8)
        for (int i = 0; i < 8; i++) {
            const float x = v[i];
            v[i] = 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
        }
    }
}

/* Within a parallel region: the threads share y's (rows, N) outputs. */
void matvec_activate(float *y, long rows, long N, int activation) {
    if (activation == TS_ACTIVATION_NONE) return;
    const long blocks = (N + 7) / 8;
#pragma omp for schedule(static)
    for (long b = 0; b < rows * blocks; b++) {
        float *v = y + (b / blocks) * N + (b % blocks) * 8;
        const long count = min_long(8, N - (b % blocks) * 8);
        if (count == 8) {
            activate8(v, activation);
        } else { /* a row's last few, padded to eight */
            float padded[8] = {0};
            for (long i = 0; i < count; i++) padded[i] = v[i];
            activate8(padded, activation);
            for (long i = 0; i < count; i++) v[i] = padded[i];
        }
    }
}

typedef void (*tile_f32_fn)(const float *, long, const float *, long, long, float *, long);

#if defined(__AVX2__) && defined(__FMA__)
/* `tile_f32` with 512-bit registers (AVX-512F), chosen at run time where the CPU has them: the
 * same rows grouped the same way, each lane of a row's output summing every 16th product, so a
 * row's result still does not depend on its batch. Half the instructions per weight byte keep
 * more loads in flight than the 256-bit loop does. */
#define TARGET_F32_ZMM __attribute__((target("avx512f")))

TARGET_F32_ZMM static void tile_f32_zmm(const float *x, long rows, const float *w, long K,
                                        long count, float *y, long N) {
    const float *wj[TILE];
    for (int j = 0; j < TILE; j++) wj[j] = w + min_long(j, count - 1) * K;
    const long K16 = K / 16 * 16;
    for (long r = 0; r < rows;) {
        const long left = rows - r, group = left >= 3 && left != 4 ? 3 : min_long(left, 2);
        const float *xs[3];
        for (long i = 0; i < 3; i++) xs[i] = x + (r + min_long(i, group - 1)) * K;
        __m512 acc[3][TILE];
        for (int i = 0; i < 3; i++)
            for (int j = 0; j < TILE; j++) acc[i][j] = _mm512_setzero_ps();
        if (group == 3) {
            for (long k = 0; k < K16; k += 16) {
                const __m512 va = _mm512_loadu_ps(xs[0] + k), vb = _mm512_loadu_ps(xs[1] + k);
                const __m512 vc = _mm512_loadu_ps(xs[2] + k);
                for (int j = 0; j < TILE; j++) {
                    _mm_prefetch((const char *)(wj[j] + k + PREFETCH_F32), _MM_HINT_T0);
                    const __m512 wv = _mm512_loadu_ps(wj[j] + k);
                    acc[0][j] = _mm512_fmadd_ps(va, wv, acc[0][j]);
                    acc[1][j] = _mm512_fmadd_ps(vb, wv, acc[1][j]);
                    acc[2][j] = _mm512_fmadd_ps(vc, wv, acc[2][j]);
                }
            }
        } else {
            for (long k = 0; k < K16; k += 16) {
                const __m512 va = _mm512_loadu_ps(xs[0] + k), vb = _mm512_loadu_ps(xs[1] + k);
                for (int j = 0; j < TILE; j++) {
                    _mm_prefetch((const char *)(wj[j] + k + PREFETCH_F32), _MM_HINT_T0);
                    const __m512 wv = _mm512_loadu_ps(wj[j] + k);
                    acc[0][j] = _mm512_fmadd_ps(va, wv, acc[0][j]);
                    acc[1][j] = _mm512_fmadd_ps(vb, wv, acc[1][j]);
                }
            }
        }
        for (long i = 0; i < group; i++)
            for (long j = 0; j < count; j++) {
                float sum = _mm512_reduce_add_ps(acc[i][j]);
                for (long k = K16; k < K; k++) sum = fmaf(xs[i][k], wj[j][k], sum);
                y[(r + i) * N + j] = sum;
            }
        r += group;
    }
}

/* -1: not chosen yet; 0: 256-bit; 1: 512-bit (its answer never changes: a benign race) */
static int f32_variant = -1;

/* For tests: float32 products through `variant` (0: 256-bit, 1: 512-bit), or -1 for this CPU's
 * fastest again. Returns 0, or 1 where this CPU cannot run the variant. */
int matvec_f32_variant(int variant) {
    const int zmm = __builtin_cpu_supports("avx512f");
    if (variant < -1 || variant > 1 || (variant == 1 && !zmm)) return 1;
    f32_variant = variant == -1 ? zmm : variant;
    return 0;
}

static tile_f32_fn tile_f32_kernel(void) {
    if (f32_variant < 0) matvec_f32_variant(-1);
    return f32_variant == 1 ? tile_f32_zmm : tile_f32;
}
#else
int matvec_f32_variant(int variant) { return variant == -1 || variant == 0 ? 0 : 1; }

static tile_f32_fn tile_f32_kernel(void) { return tile_f32; }
#endif

int matvec_f32(const float *x, const float *w, float *y, long rows, long K, long N,
               int activation) {
    const tile_f32_fn tile = tile_f32_kernel();
#pragma omp parallel if (N * K >= PARALLEL_WEIGHTS)
    {
#pragma omp for schedule(static)
        for (long n = 0; n < N; n += TILE) tile(x, rows, w + n * K, K, min_long(TILE, N - n), y + n, N);
        matvec_activate(y, rows, N, activation);
    }
    return 0;
}

/* int8 weights, prepacked by tunesmith.engine.kernels.matvec as (ceil(N / 4), Kp / 16, 4, 16):
 * tile n's four weight rows interleaved 16 values at a time, so each thread reads one sequential
 * stream (four rows read side by side use the memory bandwidth far worse). Kp is K rounded up to
 * 16 and N up to 4, the padding zero.
 *
 * Each activation row is rounded to int16 against its own max-abs, and the products summed
 * exactly in int32 (widening each weight to float costs twice the instructions, more than the
 * CPU has time for at memory speed). The int16 step is chosen so that no int32 lane can
 * overflow: Kp / 8 products of at most 127 * limit each; lanes are totalled in 64 bits. Integer
 * sums are exact, so every output is the same whatever the row count, the order or the
 * threads. */
static long int16_limit(long Kp) {
    long limit = 2147483647L / (Kp / 8 * 127 + 1);
    return limit < 32767 ? limit : 32767;
}

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

static void tile_q(const int16_t *xq, const float *xs, long rows, const int8_t *tile, long Kp,
                   long count, const float *scale, float *y, long N, vi *acc) {
    const long pairs = (rows + 1) / 2;
    for (long i = 0; i < pairs * 2 * TILE; i++) acc[i] = vi_zero();
    for (long k0 = 0; k0 < Kp; k0 += BLOCK_I8)
        for (long p = 0; p < pairs; p++) {
            const int16_t *xa = xq + 2 * p * Kp, *xb = 2 * p + 1 < rows ? xa + Kp : xa;
            block_q(xa, xb, tile, k0, min_long(Kp, k0 + BLOCK_I8), acc + p * 2 * TILE);
        }
    for (long p = 0; p < pairs; p++)
        for (long j = 0; j < count; j++) {
            const long r = 2 * p;
            y[r * N + j] = (float)vi_sum(acc[p * 2 * TILE + j]) * (xs[r] * scale[j]);
            if (r + 1 < rows)
                y[(r + 1) * N + j] =
                    (float)vi_sum(acc[p * 2 * TILE + TILE + j]) * (xs[r + 1] * scale[j]);
        }
}

int matvec_i8(const float *x, const int8_t *w, const float *scale, float *y, long rows, long K,
              long N, int activation) {
    const long Kp = (K + CHUNK - 1) / CHUNK * CHUNK;
    const size_t bytes = sizeof(vi) * (size_t)((rows + 1) / 2) * 2 * TILE;
    int16_t *xq = malloc(sizeof(int16_t) * rows * Kp);
    float *xs = malloc(sizeof(float) * rows);
    const int unready = !xq || !xs;
    int failed = unready;
    if (!unready) quantize_rows(x, rows, K, Kp, xq, xs);
#pragma omp parallel if (!unready && N * K >= PARALLEL_WEIGHTS)
    {
        vi *acc = unready ? NULL : aligned_alloc(sizeof(vi), bytes);
        if (!acc) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (long n = 0; n < N; n += TILE)
            if (acc)
                tile_q(xq, xs, rows, w + n * Kp, Kp, min_long(TILE, N - n), scale + n, y + n, N,
                       acc);
        free(acc);
        matvec_activate(y, rows, N, activation); /* (on a failed call: values nobody reads) */
    }
    free(xq), free(xs);
    return failed;
}
