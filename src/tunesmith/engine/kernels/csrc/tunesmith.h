/* The contract between tunesmith's compiled kernels (matvec*.c, decode_attention.c), the torch
 * operators over them (ops.cpp) and Python (tunesmith.engine.kernels reads the TS_ constants
 * from this file, so the three never disagree about a layout).
 *
 * Every entry point returns 0 on success, else a TS_ERROR_ code. ops.cpp binds them by name
 * (`tunesmith_bind_kernel`); tunesmith.engine.kernels.build lists the same names.
 */
#ifndef TUNESMITH_H
#define TUNESMITH_H

#include <stdint.h>

/* int8 weights are packed in tiles of TS_TILE output rows, TS_CHUNK inputs at a time:
 * (ceil(N / TILE), ceil(K / CHUNK), TILE, CHUNK) int8, one float32 scale per output row. */
#define TS_TILE 4
#define TS_CHUNK 16

/* int4 weights: one float16 scale per TS_Q4_GROUP inputs of each output row, (ceil(K / GROUP),
 * N); the values in tiles of TS_Q4_TILE output rows, 8 inputs at a time: (ceil(N / Q4_TILE),
 * Kp / 8, Q4_TILE * 4) uint8 (Kp: K rounded up to GROUP), byte 4 j + i holding inputs i and 4 + i
 * of the 8 of row j in its low and high nibbles, each as value + 8 (matvec_q4.c). */
#define TS_Q4_TILE 16
#define TS_Q4_GROUP 32

/* The activation a projection ends in (tunesmith.engine.kernels.ACTIVATIONS). */
#define TS_ACTIVATION_NONE 0
#define TS_ACTIVATION_GELU 1
#define TS_ACTIVATION_GELU_TANH 2

/* The attention kernels keep one head's sums on the stack. */
#define TS_MAX_HEAD_DIM 256

/* An int8 cache row: a head's values rounded to int8, then the row's float32 scale. */
#define TS_SCALE_BYTES 4

#define TS_ERROR_ALLOCATION 1 /* a scratch buffer could not be allocated */
#define TS_ERROR_HEAD_DIM 2   /* a head is larger than TS_MAX_HEAD_DIM */

#ifdef __cplusplus
extern "C" {
#endif

/* The instruction set the kernels run on this CPU: "avx512-vnni", "avx512vl-vnni", "avx2" or
 * "portable". */
const char *ts_kernels_isa(void);

int matvec_f32(const float *x, const float *w, float *y, long rows, long K, long N,
               int activation);
int matvec_i8(const float *x, const int8_t *w, const float *scale, float *y, long rows, long K,
              long N, int activation);
int matvec_i8_variant(int variant);
int matvec_f32_variant(int variant);
int matvec_q4(const float *x, const uint8_t *w, const uint16_t *scale, float *y, long rows, long K,
              long N, int activation);
int matvec_q4_variant(int variant);
int decode_attention_f32(const float *q, const float *k, const float *v, float *out, long groups,
                         long length, long stride, long dim, float scale);
int decode_attention_bf16(const float *q, const uint16_t *k, const uint16_t *v, float *out,
                          long groups, long length, long stride, long dim, float scale);
int self_attention_f32(const float *qkv, float *out, long jobs, float *const *caches,
                       const long *ts, const long *steps, const long *rows, long heads, long dim,
                       float scale);
int self_attention_bf16(const float *qkv, float *out, long jobs, uint16_t *const *caches,
                        const long *ts, const long *steps, const long *rows, long heads, long dim,
                        float scale);
int self_attention_i8(const float *qkv, float *out, long jobs, int8_t *const *caches,
                      const long *ts, const long *steps, const long *rows, long heads, long dim,
                      float scale);

#ifdef __cplusplus
}
#endif

#endif
