// Megatron-style tensor-parallel building blocks. A layer becomes parallel only through these:
//   ColumnParallelLinear  W (out/tp, in)  — output features split; input grads all-reduced
//   RowParallelLinear     W (out, in/tp)  — input features split; outputs all-reduced
//   VocabParallelEmbedding E (V/tp, d)    — rows split; lookups all-reduced
// With a TP group of size 1 the all-reduces are the identity and these are plain layers.
#pragma once
#include <cstdint>

#include "model/params.hpp"
#include "parallel/comm.hpp"

namespace bupo {

// Megatron's f/g operators on a (N, C) activation.
inline void reduce_from_tp_region(Comm& tp, float* x, int64_t n) {  // fwd: all-reduce
  if (tp.size() > 1) tp.allreduce_sum(x, static_cast<size_t>(n));
}
inline void copy_to_tp_region_backward(Comm& tp, float* dx, int64_t n) {  // bwd of identity fwd
  if (tp.size() > 1) tp.allreduce_sum(dx, static_cast<size_t>(n));
}

struct ColumnParallelLinear {
  Param* weight = nullptr;  // (out_local, in)
  Param* bias = nullptr;    // (out_local) or null
  int64_t in() const { return weight->shape[1]; }
  int64_t out_local() const { return weight->shape[0]; }
  // y (N, out_local) = x (N, in) Wᵀ + b
  void forward(float* y, const float* x, int64_t N) const;
  // dx (N, in) += dy Wᵀ-part (a partial sum over TP ranks: the caller all-reduces once for all
  // column-parallel layers sharing the same input); dW, db accumulate.
  void backward(float* dx, const float* dy, const float* x, int64_t N) const;
};

struct RowParallelLinear {
  Param* weight = nullptr;  // (out, in_local)
  int64_t in_local() const { return weight->shape[1]; }
  int64_t out() const { return weight->shape[0]; }
  // y (N, out) = all-reduce_tp( x_local (N, in_local) Wᵀ )
  void forward(Comm& tp, float* y, const float* x, int64_t N) const;
  // dx_local (N, in_local) = dy W ; dW += dyᵀ x
  void backward(float* dx, const float* dy, const float* x, int64_t N) const;
};

struct VocabParallelEmbedding {
  Param* weight = nullptr;  // (V_local, d); global rows [vocab_start, vocab_start+V_local)
  int64_t vocab_start() const { return weight->shard_offset; }
  int64_t rows() const { return weight->shape[0]; }
  int64_t dim() const { return weight->shape[1]; }
  void forward(Comm& tp, float* y, const int32_t* ids, int64_t N) const;
  void backward(const float* dy, const int32_t* ids, int64_t N) const;
};

}  // namespace bupo
