/* y (rows, N) = x (rows, K) W^T for a 4-bit weight W (N, K), as llama.cpp multiplies its Q4_0
 * weights by Q8_0 activations (the idea, not its code).
 *
 * W is rounded in groups of TS_Q4_GROUP inputs, one float16 scale each per output row (two
 * bytes a group: 4.5 bits a weight in all), and packed in tiles of TS_Q4_TILE = 16 output rows
 * (tunesmith.h): each 8 inputs of a tile are 64 bytes, four per row, the first four inputs in
 * the low nibbles and the next four in the high ones, each value stored as value + 8 (0..15).
 * Each thread reads its tiles as one sequential stream (the scales a group's 32 bytes at a
 * time beside it), and a 32-bit lane holds one row's inputs: multiplied by four activations
 * broadcast to every lane, a register sums 8 or 16 rows at once, with no horizontal adds.
 *
 * Each activation row is rounded to int8 per group against the group's own max-abs (its step
 * and the sum of its int8 values kept). Within a group the products are summed exactly in
 * integers: unsigned nibbles times signed bytes (vpmaddubsw, or vpdpbusd with AVX-512 VNNI),
 * less 8 times the activations' sum for the nibbles' offset. Then, group by group in order,
 * y += (weight scale * activation step) * sum in float32, a multiply and an add each rounded
 * (no fused multiply-add), which the torch reference (tunesmith.engine.kernels.reference)
 * repeats to the bit. An output depends only on its own row and weights: the same whatever
 * the batch, the thread count or the instruction set.
 */
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "matvec.h"
#include "tunesmith.h"
#if defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#endif

#define TILE TS_Q4_TILE    /* output rows per tile: 16, a 32-bit lane each in a zmm register */
#define GROUP TS_Q4_GROUP  /* inputs per scale */
#define BLOCK 32           /* inputs whose 16-bit sums stay exact (vpmaddubsw) */
#define OCTET 64           /* bytes of a tile's 8 inputs: 16 rows of 4 bytes, one cache line */
#define PASS 512           /* a batch's rows go over K in passes of this many inputs: the tile's
                              4 KB of them stays in L1 for every pair of rows */
#define PREFETCH 4096      /* bytes ahead of the weight stream to prefetch (as int8) */
/* scales ahead to prefetch: the next pair of tiles' (the next cache line). A tile reads one line
 * a group, each a row of scales (2 N bytes) after the last: a stride the hardware misses. */
#define SCALES_AHEAD (2 * TILE)

#if GROUP % BLOCK != 0
#error "TS_Q4_GROUP must be a multiple of 32"
#endif

/* One activation row rounded to int8 per group (`quantize_groups`). */
typedef struct {
    const int8_t *q;       /* its int8 values, Kp of them */
    const float *step;     /* each group's step */
    const int32_t *offset; /* 8 x each group's sum of values: what the nibbles' +8 adds */
} q8_row;

/* A pair of rows (a, b) over groups [g0, g1) of one tile, added to acc (row a's 16 outputs,
 * then row b's); `scales`: the tile's first float16 scale of group 0, a group `stride` apart. */
typedef void (*pass_fn)(const uint8_t *tile, const uint16_t *scales, long stride,
                        const q8_row *a, const q8_row *b, long g0, long g1, float *acc,
                        int prefetch);

static inline int32_t load4(const int8_t *p) { /* four int8 inputs as one 32-bit lane */
    int32_t v;
    memcpy(&v, p, sizeof v);
    return v;
}

/* A value the compiler must take as it is: it may neither fuse the multiply that made it into
 * the add that uses it nor reorder the multiplies and adds around it (-ffast-math's parts
 * would), so every build rounds alike. */
#if defined(__AVX2__) && defined(__FMA__)
#define OPAQUE(v) __asm__("" : "+x"(v))

#define TARGET_ZMM __attribute__((target("avx512f,avx512bw,avx512vl,avx512vnni")))
#define OPAQUE_ZMM(v) __asm__("" : "+v"(v))

/* acc += (weight scales * step) * sums for one row's outputs of a group (8 or 16 lanes). */
#define DEFINE_SCALE_ADD(NAME, VF, VI, PS, KEEP, ATTRIBUTES)                                    \
    ATTRIBUTES static inline __attribute__((always_inline)) VF NAME(VF acc, VF scales,          \
                                                                    float step, VI sums) {      \
        VF factor = PS(mul_ps)(scales, PS(set1_ps)(step));                                      \
        KEEP(factor);                                                                           \
        VF product = PS(mul_ps)(factor, PS(cvtepi32_ps)(sums));                                 \
        KEEP(product);                                                                          \
        acc = PS(add_ps)(acc, product);                                                         \
        KEEP(acc);                                                                              \
        return acc;                                                                             \
    }
#define YMM(op) _mm256_##op
#define ZMM(op) _mm512_##op
DEFINE_SCALE_ADD(scale_add8, __m256, __m256i, YMM, OPAQUE, )
DEFINE_SCALE_ADD(scale_add16, __m512, __m512i, ZMM, OPAQUE_ZMM, TARGET_ZMM)

/* vpmaddubsw: unsigned nibbles times signed int8, pairs added in 16 bits (at most
 * 2 * 15 * 127 = 3810, so a 32-input block's eight stay exact, <= 30480); each 32-bit lane is a
 * tile row's. Eight rows at a time: the tile's two halves one after the other. */
#define MADDUBS(acc, w, x4) \
    acc = _mm256_add_epi16(acc, _mm256_maddubs_epi16(w, _mm256_set1_epi32(x4)))
static void pass_madd(const uint8_t *tile, const uint16_t *scales, long stride, const q8_row *a,
                      const q8_row *b, long g0, long g1, float *acc, int prefetch) {
    const __m256i mask = _mm256_set1_epi8(0x0F), ones = _mm256_set1_epi16(1);
    __m256 acc_a[2] = {_mm256_loadu_ps(acc), _mm256_loadu_ps(acc + 8)};
    __m256 acc_b[2] = {_mm256_loadu_ps(acc + 16), _mm256_loadu_ps(acc + 24)};
    for (long g = g0; g < g1; g++) {
        const uint8_t *w = tile + g * (GROUP / 8) * OCTET;
        if (prefetch) {
            for (int o = 0; o < GROUP / 8; o++)
                _mm_prefetch((const char *)(w + o * OCTET + PREFETCH), _MM_HINT_T0);
            _mm_prefetch((const char *)(scales + g * stride + SCALES_AHEAD), _MM_HINT_T0);
        }
        for (int h = 0; h < 2; h++) {
            __m256i sa = _mm256_set1_epi32(-a->offset[g]), sb = _mm256_set1_epi32(-b->offset[g]);
            for (int k0 = 0; k0 < GROUP; k0 += BLOCK) {
                __m256i ha = _mm256_setzero_si256(), hb = _mm256_setzero_si256();
                for (int k = k0; k < k0 + BLOCK; k += 8) {
                    const __m256i c = _mm256_loadu_si256((const __m256i *)(w + k / 8 * OCTET) + h);
                    const __m256i lo = _mm256_and_si256(c, mask);
                    const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), mask);
                    const int8_t *qa = a->q + g * GROUP + k, *qb = b->q + g * GROUP + k;
                    MADDUBS(ha, lo, load4(qa)), MADDUBS(ha, hi, load4(qa + 4));
                    MADDUBS(hb, lo, load4(qb)), MADDUBS(hb, hi, load4(qb + 4));
                }
                sa = _mm256_add_epi32(sa, _mm256_madd_epi16(ha, ones));
                sb = _mm256_add_epi32(sb, _mm256_madd_epi16(hb, ones));
            }
            const __m128i halves = _mm_loadu_si128((const __m128i *)(scales + g * stride) + h);
            const __m256 ws = _mm256_cvtph_ps(halves);
            acc_a[h] = scale_add8(acc_a[h], ws, a->step[g], sa);
            acc_b[h] = scale_add8(acc_b[h], ws, b->step[g], sb);
        }
    }
    _mm256_storeu_ps(acc, acc_a[0]), _mm256_storeu_ps(acc + 8, acc_a[1]);
    _mm256_storeu_ps(acc + 16, acc_b[0]), _mm256_storeu_ps(acc + 24, acc_b[1]);
}

/* The same with 512-bit vpdpbusd (AVX-512 VNNI): the tile's 16 rows in one register, the
 * products added to 32-bit sums in one instruction (starting from -offset), the same integers;
 * then the same float32 steps, 16 lanes at a time. */
TARGET_ZMM static void pass_zmm(const uint8_t *tile, const uint16_t *scales, long stride,
                                const q8_row *a, const q8_row *b, long g0, long g1, float *acc,
                                int prefetch) {
    const __m512i mask = _mm512_set1_epi8(0x0F);
    __m512 acc_a = _mm512_loadu_ps(acc), acc_b = _mm512_loadu_ps(acc + 16);
    for (long g = g0; g < g1; g++) {
        const uint8_t *w = tile + g * (GROUP / 8) * OCTET;
        __m512i sa = _mm512_set1_epi32(-a->offset[g]), sb = _mm512_set1_epi32(-b->offset[g]);
        if (prefetch)
            _mm_prefetch((const char *)(scales + g * stride + SCALES_AHEAD), _MM_HINT_T0);
        for (int k = 0; k < GROUP; k += 8) {
            if (prefetch) _mm_prefetch((const char *)(w + k / 8 * OCTET + PREFETCH), _MM_HINT_T0);
            const __m512i c = _mm512_loadu_si512(w + k / 8 * OCTET);
            const __m512i lo = _mm512_and_si512(c, mask);
            const __m512i hi = _mm512_and_si512(_mm512_srli_epi16(c, 4), mask);
            const int8_t *qa = a->q + g * GROUP + k, *qb = b->q + g * GROUP + k;
            sa = _mm512_dpbusd_epi32(sa, lo, _mm512_set1_epi32(load4(qa)));
            sa = _mm512_dpbusd_epi32(sa, hi, _mm512_set1_epi32(load4(qa + 4)));
            sb = _mm512_dpbusd_epi32(sb, lo, _mm512_set1_epi32(load4(qb)));
            sb = _mm512_dpbusd_epi32(sb, hi, _mm512_set1_epi32(load4(qb + 4)));
        }
        const __m256i halves = _mm256_loadu_si256((const __m256i *)(scales + g * stride));
        const __m512 ws = _mm512_cvtph_ps(halves);
        acc_a = scale_add16(acc_a, ws, a->step[g], sa);
        acc_b = scale_add16(acc_b, ws, b->step[g], sb);
    }
    _mm512_storeu_ps(acc, acc_a), _mm512_storeu_ps(acc + 16, acc_b);
}

static pass_fn chosen_pass = NULL; /* NULL: not chosen yet */

static int can_run_pass(int variant) {
    return variant == 0 || (variant == 1 && __builtin_cpu_supports("avx512vnni") &&
                            __builtin_cpu_supports("avx512bw") &&
                            __builtin_cpu_supports("avx512vl"));
}

/* the fastest of the two this CPU runs (its answer never changes: a benign race) */
static pass_fn pass_kernel(void) {
    if (chosen_pass == NULL) chosen_pass = can_run_pass(1) ? pass_zmm : pass_madd;
    return chosen_pass;
}

/* For tests: int4 products through `variant` (0: vpmaddubsw, 1: 512-bit vpdpbusd), or -1 for
 * this CPU's fastest again. Returns 0, or 1 where this CPU cannot run the variant. */
int matvec_q4_variant(int variant) {
    if (variant == -1) {
        chosen_pass = NULL;
        return 0;
    }
    if (variant < 0 || variant > 1 || !can_run_pass(variant)) return 1;
    chosen_pass = variant == 1 ? pass_zmm : pass_madd;
    return 0;
}
#else /* portable: the same integers, then the same float32 roundings, in plain C */
#define OPAQUE(v) __asm__("" : "+r"(v))

static inline float half_to_float(uint16_t h) {
    const int exponent = (h >> 10) & 0x1F, mantissa = h & 0x3FF;
    const float magnitude = exponent == 31 ? (mantissa ? NAN : INFINITY)
                                           : ldexpf((float)(mantissa | (exponent ? 0x400 : 0)),
                                                    (exponent ? exponent : 1) - 25);
    return h & 0x8000 ? -magnitude : magnitude;
}

static void pass_portable(const uint8_t *tile, const uint16_t *scales, long stride,
                          const q8_row *a, const q8_row *b, long g0, long g1, float *acc,
                          int prefetch) {
    (void)prefetch;
    for (long g = g0; g < g1; g++)
        for (int r = 0; r < 2; r++) {
            const q8_row *row = r ? b : a;
            const int8_t *q = row->q + g * GROUP;
            for (int j = 0; j < TILE; j++) {
                int32_t sum = -row->offset[g];
                for (int k = 0; k < GROUP; k++) {
                    const uint8_t byte = tile[(g * GROUP + k) / 8 * OCTET + 4 * j + k % 4];
                    sum += (k % 8 < 4 ? byte & 0x0F : byte >> 4) * q[k];
                }
                float factor = half_to_float(scales[g * stride + j]) * row->step[g];
                OPAQUE(factor);
                float product = factor * (float)sum;
                OPAQUE(product);
                float total = acc[r * TILE + j] + product;
                OPAQUE(total);
                acc[r * TILE + j] = total;
            }
        }
}

static pass_fn pass_kernel(void) { return pass_portable; }

/* For tests: the portable build has one way to compute int4 products (variant 0). */
int matvec_q4_variant(int variant) { return variant == -1 || variant == 0 ? 0 : 1; }
#endif

/* Rounds each row of x (rows, K) to int8 per group: its values (xq: rows of Kp, zero-padded),
 * each group's step and 8 x its values' sum. */
static void quantize_groups(const float *x, long rows, long K, long Kp, int8_t *xq, float *steps,
                            int32_t *offsets) {
    const long groups = Kp / GROUP;
    for (long r = 0; r < rows; r++) {
        const float *row = x + r * K;
        int8_t *q = xq + r * Kp;
        for (long g = 0; g < groups; g++) {
            const long k0 = g * GROUP, k1 = min_long(K, k0 + GROUP);
            float top = 0.0f;
            for (long k = k0; k < k1; k++) top = fmaxf(top, fabsf(row[k]));
            /* as the reference computes them: a division, and a multiply by 1/127 in float32 */
            const float inverse = top > 0.0f ? 127.0f / top : 0.0f;
            int32_t sum = 0;
            for (long k = k0; k < k1; k++) sum += q[k] = (int8_t)lrintf(row[k] * inverse);
            for (long k = k1; k < k0 + GROUP; k++) q[k] = 0;
            steps[r * groups + g] = top * (1.0f / 127.0f), offsets[r * groups + g] = 8 * sum;
        }
    }
}

/* Tile n / TILE's `count` outputs of every row into y; `scales`: its first scale of group 0
 * (`count` < TILE: copied into `spare`, zero-padded, so no read passes the weight's end). */
static void tile_q4(const int8_t *xq, const float *steps, const int32_t *offsets, long rows,
                    const uint8_t *tile, long Kp, const uint16_t *scales, long N, long count,
                    float *y, uint16_t *spare, float *acc) {
    const long groups = Kp / GROUP, pairs = (rows + 1) / 2, pass = PASS / GROUP;
    const pass_fn run = pass_kernel();
    long stride = N;
    if (count < TILE) {
        for (long g = 0; g < groups; g++)
            for (long j = 0; j < TILE; j++) spare[g * TILE + j] = j < count ? scales[g * N + j] : 0;
        scales = spare, stride = TILE;
    }
    memset(acc, 0, sizeof(float) * 2 * TILE * pairs);
    for (long g0 = 0; g0 < groups; g0 += pass)
        for (long p = 0; p < pairs; p++) {
            const long ra = 2 * p, rb = 2 * p + 1 < rows ? 2 * p + 1 : 2 * p;
            const q8_row a = {xq + ra * Kp, steps + ra * groups, offsets + ra * groups};
            const q8_row b = {xq + rb * Kp, steps + rb * groups, offsets + rb * groups};
            run(tile, scales, stride, &a, &b, g0, min_long(groups, g0 + pass), acc + 2 * TILE * p,
                p == 0);
        }
    for (long p = 0; p < pairs; p++)
        for (long j = 0; j < count; j++) {
            y[2 * p * N + j] = acc[2 * TILE * p + j];
            if (2 * p + 1 < rows) y[(2 * p + 1) * N + j] = acc[2 * TILE * p + TILE + j];
        }
}

int matvec_q4(const float *x, const uint8_t *w, const uint16_t *scale, float *y, long rows,
              long K, long N, int activation) {
    const long Kp = (K + GROUP - 1) / GROUP * GROUP, groups = Kp / GROUP, pairs = (rows + 1) / 2;
    int8_t *xq = malloc(sizeof(int8_t) * rows * Kp);
    float *steps = malloc(sizeof(float) * rows * groups);
    int32_t *offsets = malloc(sizeof(int32_t) * rows * groups);
    const int unready = !xq || !steps || !offsets;
    int failed = unready;
    if (!unready) quantize_groups(x, rows, K, Kp, xq, steps, offsets);
#pragma omp parallel if (!unready && N * K >= PARALLEL_WEIGHTS)
    {
        float *acc = unready ? NULL : malloc(sizeof(float) * 2 * TILE * pairs);
        uint16_t *spare = unready ? NULL : malloc(sizeof(uint16_t) * TILE * groups);
        if (!acc || !spare) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (long n = 0; n < N; n += TILE)
            if (acc && spare)
                tile_q4(xq, steps, offsets, rows, w + n * (Kp / 2), Kp, scale + n, N,
                        min_long(TILE, N - n), y + n, spare, acc);
        free(acc), free(spare);
        matvec_activate(y, rows, N, activation); /* (on a failed call: values nobody reads) */
    }
    free(xq), free(steps), free(offsets);
    return failed;
}
