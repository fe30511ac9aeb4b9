/* What the matrix-product kernels (matvec.c, matvec_q4.c) share; not part of the contract in
 * tunesmith.h. */
#ifndef TUNESMITH_MATVEC_H
#define TUNESMITH_MATVEC_H

/* Below this many weights a call runs on the calling thread (waking the second costs more). */
#define PARALLEL_WEIGHTS (1L << 16)

static inline long min_long(long a, long b) { return a < b ? a : b; }

/* The activation (TS_ACTIVATION_*) applied to y's (rows, N) products, within a parallel region:
 * the threads share the outputs (matvec.c). */
__attribute__((visibility("hidden"))) void matvec_activate(float *y, long rows, long N,
                                                           int activation);

#endif
