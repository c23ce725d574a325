/* Kernels on CPU for the hf engine. Attention: each query row over exactly its own span of
 * key/value columns (a decoding sequence's cached tokens; a prompt token's prefix in
 * prefill), with a decode step's rotary embedding and cache write folded in. RMS norm,
 * rotary embedding, the gated MLP activation and sampling.
 * See cpu_kernels.py for why, and for the tables this reads.
 *
 * Compiled at first use with the machine's C compiler (-O3 -march=native); plain C with
 * GCC/Clang vector extensions, so the same source runs on AVX-512 (16 float lanes), AVX2
 * (8) and anything else (4). Float32 only; head_dim a multiple of LANES. Built with OpenMP,
 * each kernel spreads its rows over the threads it is given; builds without it ignore the
 * `omp parallel` pragmas (one thread).
 */
#include <math.h>
#include <stdint.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__AVX512F__)
#define LANES 16
#elif defined(__AVX__)
#define LANES 8
#else
#define LANES 4
#endif
#define MAX_QUERIES 16  /* query heads per key/value head */
#define MAX_CHUNKS 16   /* head_dim / LANES */

typedef float vf __attribute__((vector_size(LANES * 4)));

static inline vf load(const float *p) { vf v; memcpy(&v, p, sizeof v); return v; }
static inline void store(float *p, vf v) { memcpy(p, &v, sizeof v); }
/* (a lane-by-lane loop here compiles to inserts, not one broadcast: 2.5x slower overall) */
static inline vf splat(float x) { return (vf){0} + x; }

static inline float lane_sum(vf v) {
    float s = 0.f;
    for (int l = 0; l < LANES; l++) s += v[l];
    return s;
}

/* Lane t of the result is the sum of a[t]'s lanes: halves of pairs are added until one
 * vector is left (a transpose-and-add butterfly), far cheaper than LANES separate sums. */
static inline vf lane_sums(vf *a) {
#if LANES == 16
    vf b[8], c[4], d[2];
    for (int m = 0; m < 8; m++)
        b[m] = __builtin_shufflevector(a[2 * m], a[2 * m + 1], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23)
             + __builtin_shufflevector(a[2 * m], a[2 * m + 1], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
    for (int m = 0; m < 4; m++)
        c[m] = __builtin_shufflevector(b[2 * m], b[2 * m + 1], 0, 1, 2, 3, 8, 9, 10, 11, 16, 17, 18, 19, 24, 25, 26, 27)
             + __builtin_shufflevector(b[2 * m], b[2 * m + 1], 4, 5, 6, 7, 12, 13, 14, 15, 20, 21, 22, 23, 28, 29, 30, 31);
    for (int m = 0; m < 2; m++)
        d[m] = __builtin_shufflevector(c[2 * m], c[2 * m + 1], 0, 1, 4, 5, 8, 9, 12, 13, 16, 17, 20, 21, 24, 25, 28, 29)
             + __builtin_shufflevector(c[2 * m], c[2 * m + 1], 2, 3, 6, 7, 10, 11, 14, 15, 18, 19, 22, 23, 26, 27, 30, 31);
    return __builtin_shufflevector(d[0], d[1], 0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30)
         + __builtin_shufflevector(d[0], d[1], 1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
#elif LANES == 8
    vf c[4], d[2];
    for (int m = 0; m < 4; m++)
        c[m] = __builtin_shufflevector(a[2 * m], a[2 * m + 1], 0, 1, 2, 3, 8, 9, 10, 11)
             + __builtin_shufflevector(a[2 * m], a[2 * m + 1], 4, 5, 6, 7, 12, 13, 14, 15);
    for (int m = 0; m < 2; m++)
        d[m] = __builtin_shufflevector(c[2 * m], c[2 * m + 1], 0, 1, 4, 5, 8, 9, 12, 13)
             + __builtin_shufflevector(c[2 * m], c[2 * m + 1], 2, 3, 6, 7, 10, 11, 14, 15);
    return __builtin_shufflevector(d[0], d[1], 0, 2, 4, 6, 8, 10, 12, 14)
         + __builtin_shufflevector(d[0], d[1], 1, 3, 5, 7, 9, 11, 13, 15);
#else
    vf d[2];
    for (int m = 0; m < 2; m++)
        d[m] = __builtin_shufflevector(a[2 * m], a[2 * m + 1], 0, 1, 4, 5)
             + __builtin_shufflevector(a[2 * m], a[2 * m + 1], 2, 3, 6, 7);
    return __builtin_shufflevector(d[0], d[1], 0, 2, 4, 6) + __builtin_shufflevector(d[0], d[1], 1, 3, 5, 7);
#endif
}

/* e^x for x <= 0 (scores minus their maximum), written so the compiler vectorises it:
 * x = k ln2 + r with |r| <= ln2/2, e^r by Cephes' degree-6 polynomial (~1 ulp), 2^k by
 * building the exponent bits. Below -87 (e^x under float's smallest normal) it is 0. */
static inline float exp_nonpositive(float x) {
    float keep = x < -87.0f ? 0.0f : 1.0f;
    x = x < -87.0f ? -87.0f : x;
    float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f; /* round to nearest */
    float r = x - k * 0.693359375f + k * 2.12194440e-4f;              /* ln2 in two parts */
    float p = 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t bits = ((int32_t)k + 127) << 23;
    float two_k;
    memcpy(&two_k, &bits, sizeof two_k);
    return p * two_k * keep;
}

/* One key/value head of one row: `queries` query heads (consecutive, head_dim apart) over
 * `n` columns of keys and values (`step` apart). `scores` holds queries * n floats. Each key
 * and each value is loaded once for all the queries (on a busy machine the columns come
 * from memory, not cache: reading them is most of the cost). */
static inline __attribute__((always_inline)) void head_attention(
    const int chunks, const int queries, int64_t n, float scale, const float *q, const float *k,
    const float *v, int64_t step, float *out, float *scores)
{
    const int dim = chunks * LANES;
    vf qv[MAX_QUERIES][MAX_CHUNKS];
    for (int i = 0; i < queries; i++)
        for (int c = 0; c < chunks; c++) qv[i][c] = load(q + i * dim + c * LANES);
    /* scores = q . k * scale, LANES columns at a time, then the rest one by one */
    int64_t j = 0;
    for (; j + LANES <= n; j += LANES) {
        vf a[MAX_QUERIES][LANES];
        for (int t = 0; t < LANES; t++) {
            const float *key = k + (j + t) * step;
            vf kv[MAX_CHUNKS];
            for (int c = 0; c < chunks; c++) kv[c] = load(key + c * LANES);
            for (int i = 0; i < queries; i++) {
                vf acc = qv[i][0] * kv[0];
                for (int c = 1; c < chunks; c++) acc += qv[i][c] * kv[c];
                a[i][t] = acc;
            }
        }
        for (int i = 0; i < queries; i++) store(scores + i * n + j, lane_sums(a[i]) * splat(scale));
    }
    for (; j < n; j++) {
        const float *key = k + j * step;
        for (int i = 0; i < queries; i++) {
            vf acc = qv[i][0] * load(key);
            for (int c = 1; c < chunks; c++) acc += qv[i][c] * load(key + c * LANES);
            scores[i * n + j] = lane_sum(acc) * scale;
        }
    }
    /* softmax over the columns, then the weighted sum of the values */
    float inverse[MAX_QUERIES];
    for (int i = 0; i < queries; i++) {
        float *s = scores + i * n;
        float top = s[0];
#pragma omp simd reduction(max : top)
        for (int64_t t = 1; t < n; t++) top = s[t] > top ? s[t] : top;
        float total = 0.f;
#pragma omp simd reduction(+ : total)
        for (int64_t t = 0; t < n; t++) {
            float e = exp_nonpositive(s[t] - top);
            s[t] = e;
            total += e;
        }
        inverse[i] = 1.f / total;
    }
    vf acc[MAX_QUERIES][MAX_CHUNKS];
    for (int i = 0; i < queries; i++)
        for (int c = 0; c < chunks; c++) acc[i][c] = splat(0.f);
    for (int64_t t = 0; t < n; t++) {
        vf value[MAX_CHUNKS];
        for (int c = 0; c < chunks; c++) value[c] = load(v + t * step + c * LANES);
        for (int i = 0; i < queries; i++) {
            vf weight = splat(scores[i * n + t]);
            for (int c = 0; c < chunks; c++) acc[i][c] += weight * value[c];
        }
    }
    for (int i = 0; i < queries; i++)
        for (int c = 0; c < chunks; c++)
            store(out + i * dim + c * LANES, acc[i][c] * splat(inverse[i]));
}

/* head_attention with constant chunk and query counts for the common shapes (the compiler
 * then keeps queries and sums in registers), the general loop otherwise. */
static void dispatch_head(int chunks, int queries, int64_t n, float scale, const float *q,
                          const float *k, const float *v, int64_t step, float *out, float *scores)
{
#define SHAPE(C, Q)                                                                      \
    if (chunks == C && queries == Q) {                                                   \
        head_attention(C, Q, n, scale, q, k, v, step, out, scores);                      \
        return;                                                                          \
    }
    SHAPE(1, 1) SHAPE(1, 2) SHAPE(1, 4) SHAPE(2, 1) SHAPE(2, 2) SHAPE(2, 4)
    SHAPE(4, 1) SHAPE(4, 2) SHAPE(4, 4) SHAPE(8, 1) SHAPE(8, 2) SHAPE(8, 4)
#undef SHAPE
    head_attention(chunks, queries, n, scale, q, k, v, step, out, scores);
}

/* x rotated by the rotary embedding (cos, sin) of its position, as Llama's
 * x * cos + rotate_half(x) * sin, where rotate_half(x) = (-second half, first half). */
static inline void rotate(const float *x, const float *cos, const float *sin, int dim, float *out)
{
    const int half = dim / 2;
    for (int i = 0; i < half; i++) out[i] = x[i] * cos[i] - x[i + half] * sin[i];
    for (int i = half; i < dim; i++) out[i] = x[i] * cos[i] + x[i - half] * sin[i];
}

/* Whether this build spreads rows over threads (built with OpenMP). */
int astro_attention_threaded(void)
{
#ifdef _OPENMP
    return 1;
#else
    return 0;
#endif
}

/* Whether astro_attention handles this attention shape. */
int astro_attention_supports(int heads, int kv_heads, int dim)
{
    return kv_heads > 0 && heads % kv_heads == 0 && heads / kv_heads <= MAX_QUERIES && dim > 0
        && dim % LANES == 0 && dim / LANES <= MAX_CHUNKS;
}

/* Attention of `rows` query rows, each over its own span of columns.
 * Per source s of keys and values (int64 table, 5 per source):
 *   [0] keys' address, [1] values' address (both [slots, kv_heads, columns, dim] at the same
 *   strides, dim contiguous), elements between [2] slots, [3] heads, [4] columns.
 * Per row r (int32 table, 4 per row): [0] its source, [1] its slot there, [2] its first
 *   column, [3] how many columns (>= 1) it attends to.
 * query: [rows, heads, dim] at the given row stride (heads contiguous); out: [rows, heads,
 * dim] contiguous; scores: `threads` x `scratch` floats, scratch >= heads/kv_heads x the most
 * columns of a row. Rows are spread over `threads` threads where built with OpenMP.
 * new_keys / new_values, unless NULL: [rows, kv_heads, dim] at the given row strides (heads
 * contiguous), written into each row's last column first (a decode step's new token).
 * cos / sin, unless NULL: [rows, dim] contiguous, each row's rotary embedding (Llama's
 * rotate-half form): the row's query heads and new keys are rotated by it first.
 * Returns 0, or -1 for a shape this build does not handle (nothing written). */
int astro_attention(int rows, int heads, int kv_heads, int dim, float scale, const float *query,
                    int64_t query_row_stride, const int32_t *row_table,
                    const int64_t *source_table, float *out, float *scores, int64_t scratch,
                    int threads, const float *new_keys, int64_t new_key_row_stride,
                    const float *new_values, int64_t new_value_row_stride, const float *cos,
                    const float *sin)
{
    if (!astro_attention_supports(heads, kv_heads, dim))
        return -1;
    const int queries = heads / kv_heads, chunks = dim / LANES;
#ifdef _OPENMP
#pragma omp parallel for schedule(dynamic, 4) num_threads(threads) if (threads > 1 && rows > 1)
#endif
    for (int r = 0; r < rows; r++) {
#ifdef _OPENMP
        float *mine = scores + scratch * omp_get_thread_num();
#else
        float *mine = scores;
#endif
        const int32_t *row = row_table + 4 * r;
        const int64_t *source = source_table + 5 * row[0];
        const int64_t n = row[3], step = source[4], start = row[1] * source[2] + row[2] * step;
        for (int h = 0; h < kv_heads; h++) {
            float *k = (float *)(intptr_t)source[0] + start + h * source[3];
            float *v = (float *)(intptr_t)source[1] + start + h * source[3];
            /* this row's rotary embedding, if any */
            const float *c = cos ? cos + (int64_t)r * dim : NULL;
            const float *s = sin ? sin + (int64_t)r * dim : NULL;
            if (new_keys) {
                const float *key = new_keys + r * new_key_row_stride + h * dim;
                const float *value = new_values + r * new_value_row_stride + h * dim;
                if (c)
                    rotate(key, c, s, dim, k + (n - 1) * step);
                else
                    memcpy(k + (n - 1) * step, key, dim * 4);
                memcpy(v + (n - 1) * step, value, dim * 4);
            }
            const float *q = query + r * query_row_stride + h * queries * dim;
            float rotated[MAX_QUERIES * MAX_CHUNKS * LANES];
            if (c) {
                for (int i = 0; i < queries; i++)
                    rotate(q + i * dim, c, s, dim, rotated + i * dim);
                q = rotated;
            }
            float *o = out + ((int64_t)r * heads + h * queries) * dim;
            dispatch_head(chunks, queries, n, scale, q, k, v, step, o, mine);
        }
    }
    return 0;
}

/* Llama's RMS norm of `rows` rows of `dim` floats (`x_row_stride` apart), into `out` [rows,
 * dim] contiguous: weight * (x / sqrt(mean(x^2) + eps)). One call instead of the six
 * operations torch runs for it; rows spread over `threads` threads where built with OpenMP. */
void astro_rms_norm(int rows, int dim, const float *x, int64_t x_row_stride,
                    const float *weight, float eps, float *out, int threads)
{
#pragma omp parallel for num_threads(threads) if (threads > 1 && rows > 64)
    for (int r = 0; r < rows; r++) {
        const float *in = x + r * x_row_stride;
        float *o = out + (int64_t)r * dim;
        float squares = 0.f;
#pragma omp simd reduction(+ : squares)
        for (int d = 0; d < dim; d++) squares += in[d] * in[d];
        const float inverse = 1.f / sqrtf(squares / dim + eps);
#pragma omp simd
        for (int d = 0; d < dim; d++) o[d] = weight[d] * (in[d] * inverse);
    }
}

/* One token per row drawn from softmax(logits / temperature) by inverse CDF: the number of
 * tokens whose cumulative mass is at most u * the total (torch.searchsorted(cdf, u *
 * cdf[-1], right=True)), at most vocab - 1. logits: [rows, vocab], `row_stride` apart;
 * temperature, u: one per row (temperature > 0); scratch: rows * vocab floats. Rows spread
 * over `threads` threads where built with OpenMP (for large vocabularies). */
void astro_sample(int rows, int vocab, const float *logits, int64_t row_stride,
                  const float *temperature, const float *u, float *scratch, int64_t *tokens,
                  int threads)
{
#pragma omp parallel for num_threads(threads) if (threads > 1 && rows > 1 && vocab >= 4096)
    for (int r = 0; r < rows; r++) {
        const float *x = logits + r * row_stride;
        float *e = scratch + (int64_t)r * vocab;
        const float t = temperature[r];
        float top = -INFINITY;
#pragma omp simd reduction(max : top)
        for (int k = 0; k < vocab; k++) {
            e[k] = x[k] / t;
            top = e[k] > top ? e[k] : top;
        }
        float total = 0.f;
#pragma omp simd reduction(+ : total)
        for (int k = 0; k < vocab; k++) {
            e[k] = exp_nonpositive(e[k] - top);
            total += e[k];
        }
        const float target = u[r] * total;
        float mass = 0.f;
        int64_t pick = 0;
        for (; pick < vocab - 1; pick++) {
            mass += e[pick];
            if (mass > target) break;
        }
        tokens[r] = pick;
    }
}

/* x ([rows, heads, dim] at the given row stride, heads contiguous) rotated by each row's
 * rotary embedding (cos, sin: [rows, dim]) into out [rows, heads, dim] contiguous: prefill's
 * keys, which every later row of their prompt attends to. Rows spread over `threads` threads
 * where built with OpenMP. */
void astro_rotary(int rows, int heads, int dim, const float *x, int64_t x_row_stride,
                  const float *cos, const float *sin, float *out, int threads)
{
#pragma omp parallel for num_threads(threads) if (threads > 1 && rows > 64)
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < heads; h++)
            rotate(x + r * x_row_stride + h * dim, cos + (int64_t)r * dim, sin + (int64_t)r * dim,
                   dim, out + ((int64_t)r * heads + h) * dim);
}

/* Llama's gated MLP activation, out = silu(gate) * up, over `rows` rows of `width` floats
 * (gate and up rows at their own strides; out contiguous). silu(g) = g * sigmoid(g), the
 * sigmoid from e^-|g| so that the exponent is never positive. Rows spread over `threads`
 * threads where built with OpenMP. */
void astro_silu_mul(int rows, int width, const float *gate, int64_t gate_row_stride,
                    const float *up, int64_t up_row_stride, float *out, int threads)
{
#pragma omp parallel for num_threads(threads) if (threads > 1 && rows > 64)
    for (int r = 0; r < rows; r++) {
        const float *g = gate + r * gate_row_stride, *u = up + r * up_row_stride;
        float *o = out + (int64_t)r * width;
#pragma omp simd
        for (int i = 0; i < width; i++) {
            const float e = exp_nonpositive(-fabsf(g[i]));
            const float sigmoid = g[i] >= 0.f ? 1.f / (1.f + e) : e / (1.f + e);
            o[i] = g[i] * sigmoid * u[i];
        }
    }
}
