// torch operators over tunesmith's compiled kernels (csrc/*.c), called from the TorchScript
// decoder step without going through Python.
//
// The operators' schemas are defined from Python (tunesmith.engine.native), so TorchScript can
// script the decoder whether or not this library builds; this file registers their CPU kernels.
// A torch operator implemented in Python costs ~20 us per call (and takes the GIL), and a decode
// step makes ~190 such calls; these take ~4 us. The kernels themselves live in a separate C
// library that tunesmith.engine.native loads with ctypes and binds here with
// `tunesmith_bind_kernels`: that library can be rebuilt and rebound within a process (a
// portable build, say), while torch operators can be registered only once.
//
// Built by tunesmith.engine.native with the C++ compiler against torch's own headers.
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <c10/util/Exception.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <vector>

namespace {

using MatvecF32 = int (*)(const float *, const float *, float *, long, long, long, int);
using MatvecI8 = int (*)(const float *, const int8_t *, const float *, float *, long, long, long,
                         int);
using DecodeAttention = int (*)(const float *, const void *, const void *, float *, long, long,
                                long, long, float);
using SelfAttention = int (*)(const float *, float *, long, void *const *, const long *,
                              const long *, const long *, long, long, float);

// The bound kernels, in the order of tunesmith.engine.native._ENTRIES.
struct Kernels {
    DecodeAttention decode_attention_f32 = nullptr;
    DecodeAttention decode_attention_bf16 = nullptr;
    SelfAttention self_attention_f32 = nullptr;
    SelfAttention self_attention_bf16 = nullptr;
    MatvecF32 matvec_f32 = nullptr;
    MatvecI8 matvec_i8 = nullptr;
    SelfAttention self_attention_i8 = nullptr;
} kernels;

constexpr int64_t kTile = 4, kChunk = 16;  // csrc/matvec.c's packed int8 layout
constexpr int64_t kActivations = 2;       // csrc/matvec.c: none, GELU, GELU (tanh)
constexpr int64_t kMaxHeadDim = 256;       // the attention kernels keep a head's sums on the stack
constexpr int64_t kScaleBytes = 4;         // an int8 cache row ends in its float32 scale

int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// float32 or bfloat16: the attention kernels' cache types.
bool cache_type(const at::Tensor &cache) {
    return cache.scalar_type() == at::kFloat || cache.scalar_type() == at::kBFloat16;
}

// x (rows, K) float32 times weight (N, K) transposed; weight float32, or int8 packed by
// tunesmith.engine.matvec.pack_int8 with its (N,) float32 scales; then the activation
// (tunesmith.engine.kernels.ACTIVATIONS).
at::Tensor matvec(const at::Tensor &x_in, const at::Tensor &weight,
                  const std::optional<at::Tensor> &scale, int64_t activation) {
    TORCH_CHECK(kernels.matvec_f32 != nullptr && x_in.device().is_cpu(),
                "matvec needs the compiled kernels and CPU tensors");
    TORCH_CHECK_VALUE(0 <= activation && activation <= kActivations, "unknown activation ",
                      activation);
    TORCH_CHECK_VALUE(x_in.dim() == 2 && x_in.scalar_type() == at::kFloat,
                      "matvec takes float32 rows (rows, K), not ", x_in.scalar_type(), " ",
                      x_in.sizes());
    TORCH_CHECK_VALUE(weight.is_contiguous(), "matvec takes a contiguous weight");
    const at::Tensor x = x_in.contiguous();
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
    TORCH_CHECK_VALUE(weight.scalar_type() == at::kChar && scale.has_value() &&
                          scale->scalar_type() == at::kFloat,
                      "matvec takes a float32 weight, or an int8 one with float32 scales");
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

// One decode step's self-attention for a batch of jobs: see tunesmith.engine.attention.
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
    TORCH_CHECK_VALUE(0 < dim && dim <= kMaxHeadDim, "head size ", dim, " is not in 1..", kMaxHeadDim);
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

// Binds the kernels of a loaded csrc/*.c library (their addresses in the order of `Kernels`),
// or unbinds them with NULL.
extern "C" void tunesmith_bind_kernels(void *const *entries) {
    Kernels bound;
    if (entries != nullptr) {
        bound.decode_attention_f32 = reinterpret_cast<DecodeAttention>(entries[0]);
        bound.decode_attention_bf16 = reinterpret_cast<DecodeAttention>(entries[1]);
        bound.self_attention_f32 = reinterpret_cast<SelfAttention>(entries[2]);
        bound.self_attention_bf16 = reinterpret_cast<SelfAttention>(entries[3]);
        bound.matvec_f32 = reinterpret_cast<MatvecF32>(entries[4]);
        bound.matvec_i8 = reinterpret_cast<MatvecI8>(entries[5]);
        bound.self_attention_i8 = reinterpret_cast<SelfAttention>(entries[6]);
    }
    kernels = bound;
}

TORCH_LIBRARY_IMPL(tunesmith, CPU, m) {
    m.impl("matvec", TORCH_FN(matvec));
    m.impl("decode_attention", TORCH_FN(decode_attention));
    m.impl("self_attention", TORCH_FN(self_attention));
}
