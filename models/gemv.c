/* archbench's single-row product for batch-1 decode: y = W x + b with W stored (out, in), row-major.
 *
 * Batch-1 decode is a chain of matrix-vector products whose speed is the speed of streaming the
 * weights. The rows are split into equal static blocks across `threads` OpenMP threads (no work
 * sharing at run time), and each pass reads four rows against one x, so x stays in L1 and every
 * weight byte is read once, in order. Built at first use by models/gemv.py with -O3 -march=native:
 * the compiler vectorises the reduction for the machine it runs on.
 */
#include <stddef.h>

void archbench_gemv(const float *restrict W, const float *restrict x, const float *restrict b,
                    float *restrict y, long out, long in, int threads) {
    long groups = (out + 3) / 4;
    #pragma omp parallel for schedule(static) num_threads(threads)
    for (long g = 0; g < groups; g++) {
        long r = 4 * g;
        if (r + 4 <= out) {
            const float *w0 = W + r * in, *w1 = w0 + in, *w2 = w1 + in, *w3 = w2 + in;
            float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
            #pragma omp simd reduction(+ : s0, s1, s2, s3)
            for (long i = 0; i < in; i++) {
                float xi = x[i];
                s0 += w0[i] * xi;
                s1 += w1[i] * xi;
                s2 += w2[i] * xi;
                s3 += w3[i] * xi;
            }
            y[r] = s0;
            y[r + 1] = s1;
            y[r + 2] = s2;
            y[r + 3] = s3;
        } else {
            for (long j = r; j < out; j++) {
                const float *w = W + j * in;
                float s = 0.0f;
                #pragma omp simd reduction(+ : s)
                for (long i = 0; i < in; i++) s += w[i] * x[i];
                y[j] = s;
            }
        }
        if (b != NULL) {
            for (long j = r; j < out && j < r + 4; j++) y[j] += b[j];
        }
    }
}
