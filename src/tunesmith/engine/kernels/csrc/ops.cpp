// torch operators over tunesmith's compiled kernels (csrc/*.c), called from the TorchScript
// decoder step without going through Python.
//
// The operators' schemas are defined from Python (tunesmith.engine.kernels), so TorchScript can
// script the decoder whether or not this library builds; this file registers their CPU kernels.
// A torch operator implemented in Python costs far more per call (and takes the GIL), and a
// decode step makes ~190 such calls. The kernels themselves live in a separate C library that
// tunesmith.engine.kernels.build loads with ctypes and binds here by name with
// `tunesmith_bind_kernel`: that library can be rebuilt and rebound within a process (a
// portable build, say), while torch operators can be registered only once.
//
// Built by tunesmith.engine.kernels.build with the C++ compiler against torch's own headers.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <vector>

#include "tunesmith.h"

namespace {

using MatvecF32 = int (*)(const float *, const float *, float *, long, long, long, int);
using MatvecI8 = int (*)(const float *, const int8_t *, const float *, float *, long, long, long,
                         int);
using MatvecQ4 = int (*)(const float *, const uint8_t *, const uint16_t *, float *, long, long,
                         long, int);
using DecodeAttention = int (*)(const float *, const void *, const void *, float *, long, long,
                                long, long, float);
using SelfAttention = int (*)(const float *, float *, long, void *const *, const long *,
                              const long *, const long *, long, long, float);

// The bound kernels (tunesmith_bind_kernel sets each by its name in tunesmith.h).
struct Kernels {
    DecodeAttention decode_attention_f32 = nullptr;
    DecodeAttention decode_attention_bf16 = nullptr;
    SelfAttention self_attention_f32 = nullptr;
    SelfAttention self_attention_bf16 = nullptr;
    MatvecF32 matvec_f32 = nullptr;
    MatvecI8 matvec_i8 = nullptr;
    MatvecQ4 matvec_q4 = nullptr;
    SelfAttention self_attention_i8 = nullptr;
} kernels;

constexpr int64_t kTile = TS_TILE, kChunk = TS_CHUNK;
constexpr int64_t kQ4Tile = TS_Q4_TILE, kGroup = TS_Q4_GROUP;
constexpr int64_t kActivations = TS_ACTIVATION_GELU_TANH;  // the largest activation code
constexpr int64_t kMaxHeadDim = TS_MAX_HEAD_DIM;
constexpr int64_t kScaleBytes = TS_SCALE_BYTES;

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// float32 or bfloat16: the attention kernels' cache types.
bool cache_type(const at::Tensor &cache) {
    return cache.scalar_type() == at::kFloat || cache.scalar_type() == at::kBFloat16;
}

at::Tensor project(const at::Tensor &x, const at::Tensor &weight,
                   const std::optional<at::Tensor> &scale, int64_t activation);

// Each row of x (rows, K) layer-normalized as F.layer_norm does with eps 1e-5 (mean and
// variance over the row, then weight and bias): a new contiguous tensor. The sums are in double,
// so a row may differ from torch's in its last bits.
at::Tensor layer_norm_rows(const at::Tensor &x, const at::Tensor &weight, const at::Tensor &bias) {
    const int64_t rows = x.size(0), size = x.size(1);
    TORCH_CHECK_VALUE(weight.scalar_type() == at::kFloat && bias.scalar_type() == at::kFloat &&
                          weight.is_contiguous() && bias.is_contiguous() &&
                          weight.numel() == size && bias.numel() == size,
                      "layer norm weight and bias must be contiguous float32 of ", size,
                      " values, not ", weight.sizes(), " and ", bias.sizes());
    at::Tensor out = at::empty_like(x);
    const float *in = x.const_data_ptr<float>(), *w = weight.const_data_ptr<float>(),
                *b = bias.const_data_ptr<float>();
    float *o = out.mutable_data_ptr<float>();
    for (int64_t r = 0; r < rows; r++) {
        const float *row = in + r * size;
        double total = 0.0;
        for (int64_t k = 0; k < size; k++) total += row[k];
        const double mean = total / static_cast<double>(size);
        double squares = 0.0;
        for (int64_t k = 0; k < size; k++) squares += (row[k] - mean) * (row[k] - mean);
        const float centre = static_cast<float>(mean);
        const float rstd = static_cast<float>(1.0 / std::sqrt(squares / size + 1e-5));
        for (int64_t k = 0; k < size; k++) o[r * size + k] = (row[k] - centre) * rstd * w[k] + b[k];
    }
    return out;
}

// x (rows, K) float32 times weight (N, K) transposed; weight float32, or int8 packed by
// tunesmith.engine.kernels.matvec.pack_int8 with its (N,) float32 scales, or int4 (uint8)
// packed by tunesmith.engine.kernels.int4.pack_int4 with its float16 scales; then the activation
// (TS_ACTIVATION_* in tunesmith.h). With norm_weight and norm_bias, x is layer-normalized
// first (`layer_norm_rows`); with a residual (rows, N), it is added to the result. Fusing them
// here saves the decoder step ~120 torch operators, each dispatched on its own.
at::Tensor matvec(const at::Tensor &x_in, const at::Tensor &weight,
                  const std::optional<at::Tensor> &scale, int64_t activation,
                  const std::optional<at::Tensor> &norm_weight,
                  const std::optional<at::Tensor> &norm_bias,
                  const std::optional<at::Tensor> &residual) {
    TORCH_CHECK(kernels.matvec_f32 != nullptr && x_in.device().is_cpu(),
                "matvec needs the compiled kernels and CPU tensors");
    TORCH_CHECK_VALUE(0 <= activation && activation <= kActivations, "unknown activation ",
                      activation);
    TORCH_CHECK_VALUE(x_in.dim() == 2 && x_in.scalar_type() == at::kFloat,
                      "matvec takes float32 rows (rows, K), not ", x_in.scalar_type(), " ",
                      x_in.sizes());
    TORCH_CHECK_VALUE(weight.is_contiguous(), "matvec takes a contiguous weight");
    TORCH_CHECK_VALUE(norm_weight.has_value() == norm_bias.has_value(),
                      "matvec takes both a layer norm's weight and bias, or neither");
    const at::Tensor x = norm_weight.has_value()
                             ? layer_norm_rows(x_in.contiguous(), *norm_weight, *norm_bias)
                             : x_in.contiguous();
    at::Tensor y = project(x, weight, scale, activation);
    if (residual.has_value()) {
        TORCH_CHECK_VALUE(residual->scalar_type() == at::kFloat && residual->is_contiguous() &&
                              residual->sizes() == y.sizes(),
                          "the residual must be contiguous float32 ", y.sizes(), ", not ",
                          residual->scalar_type(), " ", residual->sizes());
        float *out = y.mutable_data_ptr<float>();
        const float *add = residual->const_data_ptr<float>();
        for (int64_t i = 0; i < y.numel(); i++) out[i] += add[i];
    }
    return y;
}

// The product of contiguous float32 rows x and an int4 weight (csrc/matvec_q4.c's layout).
at::Tensor project_q4(const at::Tensor &x, const at::Tensor &weight,
                      const std::optional<at::Tensor> &scale, int64_t activation) {
    TORCH_CHECK_VALUE(scale.has_value() && scale->scalar_type() == at::kHalf && scale->dim() == 2 &&
                          scale->is_contiguous(),
                      "matvec takes an int4 (uint8) weight with float16 scales (groups, N)");
    const int64_t rows = x.size(0), size = x.size(1), outputs = scale->size(1);
    const int64_t groups = ceil_div(size, kGroup);
    const std::vector<int64_t> packed{ceil_div(outputs, kQ4Tile), groups * kGroup / 8, kQ4Tile * 4};
    TORCH_CHECK_VALUE(weight.sizes() == c10::IntArrayRef(packed) && scale->size(0) == groups,
                      "int4 weight ", weight.sizes(), " with scales ", scale->sizes(),
                      " is not packed for ", x.sizes());
    at::Tensor y = at::empty({rows, outputs}, x.options());
    const int failed = kernels.matvec_q4(
        x.const_data_ptr<float>(), weight.const_data_ptr<uint8_t>(),
        static_cast<const uint16_t *>(scale->const_data_ptr()), y.mutable_data_ptr<float>(),
        rows, size, outputs, static_cast<int>(activation));
    TORCH_CHECK(!failed, "matvec could not allocate its rounded rows");
    return y;
}

// The product of contiguous float32 rows x and a weight, as `matvec` describes.
at::Tensor project(const at::Tensor &x, const at::Tensor &weight,
                   const std::optional<at::Tensor> &scale, int64_t activation) {
    const int64_t rows = x.size(0), size = x.size(1);
    if (weight.scalar_type() == at::kFloat && !scale.has_value()) {
        TORCH_CHECK_VALUE(weight.dim() == 2 && weight.size(1) == size, "bad shapes: x ",
                          x.sizes(), ", weight ", weight.sizes());
        at::Tensor y = at::empty({rows, weight.size(0)}, x.options());
        kernels.matvec_f32(x.const_data_ptr<float>(), weight.const_data_ptr<float>(),
                           y.mutable_data_ptr<float>(), rows, size, weight.size(0),
                           static_cast<int>(activation));
        return y;
    }
    if (weight.scalar_type() == at::kByte) return project_q4(x, weight, scale, activation);
    TORCH_CHECK_VALUE(weight.scalar_type() == at::kChar && scale.has_value() &&
                          scale->scalar_type() == at::kFloat,
                      "matvec takes a float32 weight, an int8 one with float32 scales or an int4 "
                      "(uint8) one with float16 scales");
    const int64_t outputs = scale->size(0);
    const std::vector<int64_t> packed{ceil_div(outputs, kTile), ceil_div(size, kChunk), kTile,
                                      kChunk};
    TORCH_CHECK_VALUE(weight.sizes() == c10::IntArrayRef(packed) && scale->dim() == 1 &&
                          scale->is_contiguous(),
                      "int8 weight ", weight.sizes(), " is not packed for ", x.sizes());
    at::Tensor y = at::empty({rows, outputs}, x.options());
    const int failed =
        kernels.matvec_i8(x.const_data_ptr<float>(), weight.const_data_ptr<int8_t>(),
                          scale->const_data_ptr<float>(), y.mutable_data_ptr<float>(), rows, size,
                          outputs, static_cast<int>(activation));
    TORCH_CHECK(!failed, "matvec could not allocate its rounded rows");
    return y;
}

// One conditional row's cross-attention through the weights folded into its prompt
// (tunesmith.engine.model.cross): x (1, D) layer-normalized, scores = x A^T (H * S) with
// A = a[layer], a softmax over each head's S scores, then p B^T (1, D) with B^T = b[layer].
// a and b are stacked per layer as matvec takes its weights (int8 with their scales, or
// float32 without).
at::Tensor folded_attention(const at::Tensor &x, const at::Tensor &a,
                            const std::optional<at::Tensor> &a_scale, const at::Tensor &b,
                            const std::optional<at::Tensor> &b_scale, int64_t layer,
                            int64_t heads, const at::Tensor &norm_weight,
                            const at::Tensor &norm_bias) {
    TORCH_CHECK(kernels.matvec_f32 != nullptr && x.device().is_cpu(),
                "folded_attention needs the compiled kernels and CPU tensors");
    TORCH_CHECK_VALUE(x.dim() == 2 && x.size(0) == 1 && x.scalar_type() == at::kFloat,
                      "folded_attention takes one float32 row (1, D), not ", x.scalar_type(),
                      " ", x.sizes());
    TORCH_CHECK_VALUE(a.dim() >= 3 && b.dim() >= 3 && 0 <= layer && layer < a.size(0) &&
                          layer < b.size(0) && heads > 0,
                      "bad folded weights ", a.sizes(), " and ", b.sizes(), " for layer ", layer);
    const auto pick = [layer](const std::optional<at::Tensor> &t) {
        return t.has_value() ? std::optional<at::Tensor>(t->select(0, layer)) : std::nullopt;
    };
    const at::Tensor h = layer_norm_rows(x.contiguous(), norm_weight, norm_bias);
    at::Tensor scores = project(h, a.select(0, layer), pick(a_scale), 0);
    const int64_t total = scores.size(1), length = total / heads;
    TORCH_CHECK_VALUE(length * heads == total && length > 0, total, " scores for ", heads,
                      " heads");
    float *p = scores.mutable_data_ptr<float>();
    for (int64_t head = 0; head < heads; head++, p += length) {  // softmax, as torch's
        float top = p[0];
        for (int64_t s = 1; s < length; s++) top = std::max(top, p[s]);
        float sum = 0.0f;
        for (int64_t s = 0; s < length; s++) sum += (p[s] = std::exp(p[s] - top));
        for (int64_t s = 0; s < length; s++) p[s] /= sum;
    }
    return project(scores, b.select(0, layer), pick(b_scale), 0);
}

// query (rows, H, hd) over cache[0/1, :, :, :length] of a contiguous (2, rows, H, T, hd) cache.
at::Tensor decode_attention(const at::Tensor &query_in, const at::Tensor &cache, int64_t length) {
    TORCH_CHECK(kernels.decode_attention_f32 != nullptr && cache_type(cache) &&
                    cache.is_contiguous() && cache.device().is_cpu(),
                "decode_attention needs the compiled kernel and a contiguous float32 or "
                "bfloat16 CPU cache");
    TORCH_CHECK_VALUE(cache.dim() == 5 && query_in.dim() == 3 && 0 < length &&
                          length <= cache.size(3) && query_in.size(0) == cache.size(1) &&
                          query_in.size(1) == cache.size(2) && query_in.size(2) == cache.size(4),
                      "bad shapes: query ", query_in.sizes(), ", cache ", cache.sizes());
    TORCH_CHECK_VALUE(query_in.size(2) <= kMaxHeadDim, "head size ", query_in.size(2),
                      " is above ", kMaxHeadDim);
    const at::Tensor query = query_in.contiguous().to(at::kFloat);
    at::Tensor out = at::empty_like(query);
    const int64_t rows = cache.size(1), heads = cache.size(2), steps = cache.size(3),
                  dim = cache.size(4);
    const auto kernel = cache.scalar_type() == at::kFloat ? kernels.decode_attention_f32
                                                          : kernels.decode_attention_bf16;
    const char *base = static_cast<const char *>(cache.const_data_ptr());
    const int failed = kernel(query.const_data_ptr<float>(), base,
                              base + cache.stride(0) * cache.element_size(),
                              out.mutable_data_ptr<float>(), rows * heads, length, steps * dim,
                              dim, 1.0f / std::sqrt(static_cast<float>(dim)));
    TORCH_CHECK(!failed, "decode_attention could not allocate its scores");
    return out;
}

// One decode step's self-attention for a batch of jobs: see tunesmith.engine.kernels.attention.
at::Tensor self_attention(const at::Tensor &qkv, at::TensorList caches, c10::IntArrayRef ts,
                          int64_t layer) {
    TORCH_CHECK(kernels.self_attention_f32 != nullptr && !caches.empty() &&
                    (cache_type(caches[0]) || caches[0].scalar_type() == at::kChar),
                "self_attention needs the compiled kernel and float32, bfloat16 or int8 caches");
    TORCH_CHECK_VALUE(qkv.scalar_type() == at::kFloat && qkv.dim() == 2 && qkv.is_contiguous(),
                      "qkv must be contiguous float32 (R, 3D), not ", qkv.scalar_type(), " ",
                      qkv.sizes());
    TORCH_CHECK_VALUE(ts.size() == caches.size(), caches.size(), " caches but ", ts.size(),
                      " positions");
    const at::Tensor &first = caches[0];
    TORCH_CHECK_VALUE(first.dim() == 6, "bad cache ", first.scalar_type(), " ", first.sizes(),
                      " for layer ", layer, ", position ", ts[0]);
    const auto dtype = first.scalar_type();
    const int64_t row = first.size(5), dim = dtype == at::kChar ? row - kScaleBytes : row;
    const int64_t heads = first.size(3);
    TORCH_CHECK_VALUE(qkv.size(1) == 3 * heads * dim, "qkv has ", qkv.size(1),
                      " columns, not 3 x ", heads, " heads x ", dim);
    TORCH_CHECK_VALUE(0 < dim && dim <= kMaxHeadDim, "head size ", dim, " is not in 1..",
                      kMaxHeadDim);
    const size_t count = caches.size();
    std::vector<void *> pointers(count);
    std::vector<long> positions(count), steps(count), rows(count);
    int64_t total = 0;
    for (size_t j = 0; j < count; j++) {
        const at::Tensor &cache = caches[j];
        TORCH_CHECK_VALUE(cache.dim() == 6 && cache.scalar_type() == dtype &&
                              cache.is_contiguous() && cache.device().is_cpu() &&
                              cache.size(1) == 2 && cache.size(3) == heads &&
                              cache.size(5) == row && 0 <= layer && layer < cache.size(0) &&
                              0 <= ts[j] && ts[j] < cache.size(4),
                          "bad cache ", cache.scalar_type(), " ", cache.sizes(), " for layer ",
                          layer, ", position ", ts[j]);
        pointers[j] = static_cast<char *>(cache.data_ptr()) +
                      layer * cache.stride(0) * cache.element_size();
        positions[j] = ts[j];
        steps[j] = cache.size(4);
        rows[j] = cache.size(2);
        total += rows[j];
    }
    TORCH_CHECK_VALUE(total == qkv.size(0), "the caches hold ", total, " rows, qkv ",
                      qkv.size(0));
    at::Tensor out = at::empty({qkv.size(0), heads * dim}, qkv.options());
    const auto kernel = dtype == at::kFloat      ? kernels.self_attention_f32
                        : dtype == at::kBFloat16 ? kernels.self_attention_bf16
                                                 : kernels.self_attention_i8;
    const int failed = kernel(qkv.const_data_ptr<float>(), out.mutable_data_ptr<float>(),
                              static_cast<long>(count), pointers.data(), positions.data(),
                              steps.data(), rows.data(), heads, dim,
                              1.0f / std::sqrt(static_cast<float>(dim)));
    TORCH_CHECK(!failed, "self_attention could not allocate its scores");
    return out;
}

}  // namespace

// Binds one kernel of a loaded csrc/*.c library by its name in tunesmith.h (NULL unbinds it).
// Returns 0, or 1 for a name this library does not know (a kernel library newer than it).
extern "C" int tunesmith_bind_kernel(const char *name, void *entry) {
    const auto is = [name](const char *candidate) { return std::strcmp(name, candidate) == 0; };
    if (is("decode_attention_f32")) {
        kernels.decode_attention_f32 = reinterpret_cast<DecodeAttention>(entry);
    } else if (is("decode_attention_bf16")) {
        kernels.decode_attention_bf16 = reinterpret_cast<DecodeAttention>(entry);
    } else if (is("self_attention_f32")) {
        kernels.self_attention_f32 = reinterpret_cast<SelfAttention>(entry);
    } else if (is("self_attention_bf16")) {
        kernels.self_attention_bf16 = reinterpret_cast<SelfAttention>(entry);
    } else if (is("self_attention_i8")) {
        kernels.self_attention_i8 = reinterpret_cast<SelfAttention>(entry);
    } else if (is("matvec_f32")) {
        kernels.matvec_f32 = reinterpret_cast<MatvecF32>(entry);
    } else if (is("matvec_i8")) {
        kernels.matvec_i8 = reinterpret_cast<MatvecI8>(entry);
    } else if (is("matvec_q4")) {
        kernels.matvec_q4 = reinterpret_cast<MatvecQ4>(entry);
    } else {
        return 1;
    }
    return 0;
}

TORCH_LIBRARY_IMPL(tunesmith, CPU, m) {
    m.impl("matvec", TORCH_FN(matvec));
    m.impl("folded_attention", TORCH_FN(folded_attention));
    m.impl("decode_attention", TORCH_FN(decode_attention));
    m.impl("self_attention", TORCH_FN(self_attention));
}
