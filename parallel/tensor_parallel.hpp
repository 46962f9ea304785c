// Megatron-style tensor-parallel building blocks. A layer becomes parallel only through these:
//   ColumnParallelLinear  W (out/tp, in)  — output features split; input grads all-reduced
//   RowParallelLinear     W (out, in/tp)  — input features split; outputs all-reduced
//   VocabParallelEmbedding E (V/tp, d)    — rows split; lookups all-reduced
// With a TP group of size 1 the all-reduces are the identity and these are plain layers. Tensors
// are in the parameters' backend memory; `tp` is the communicator for that memory
// (ParallelContext::dev).
#pragma once
#include <cstdint>

#include "model/params.hpp"
#include "parallel/comm.hpp"

namespace bupo {

// Tensors through a communicator of their memory, in their dtype.
inline void all_reduce_sum(Comm& c, const Tensor& x) {
  if (c.size() > 1) c.allreduce_sum_dtype(x.data, static_cast<size_t>(x.numel()), x.dtype);
}
inline void send_tensor(Comm& c, const Tensor& x, int peer) {
  c.send_dtype(x.data, static_cast<size_t>(x.numel()), x.dtype, peer);
}
inline void recv_tensor(Comm& c, const Tensor& x, int peer) {
  c.recv_dtype(x.data, static_cast<size_t>(x.numel()), x.dtype, peer);
}

// Megatron's f/g operators on a (N, C) activation.
inline void reduce_from_tp_region(Comm& tp, const Tensor& x) {
  all_reduce_sum(tp, x);
}  // fwd
inline void copy_to_tp_region_backward(Comm& tp, const Tensor& dx) {  // bwd of identity fwd
  all_reduce_sum(tp, dx);
}

struct ColumnParallelLinear {
  Param* weight = nullptr;  // (out_local, in)
  Param* bias = nullptr;    // (out_local) or null
  int64_t in() const { return weight->shape[1]; }
  int64_t out_local() const { return weight->shape[0]; }
  // y (N, out_local) = x (N, in) Wᵀ + b
  void forward(const Tensor& y, const Tensor& x) const;
  // dx (N, in) += dy Wᵀ-part (a partial sum over TP ranks: the caller all-reduces once for all
  // column-parallel layers sharing the same input); dW, db accumulate.
  void backward(const Tensor& dx, const Tensor& dy, const Tensor& x) const;
};

struct RowParallelLinear {
  Param* weight = nullptr;  // (out, in_local)
  int64_t in_local() const { return weight->shape[1]; }
  int64_t out() const { return weight->shape[0]; }
  // y (N, out) = all-reduce_tp( x_local (N, in_local) Wᵀ )
  void forward(Comm& tp, const Tensor& y, const Tensor& x) const;
  // dx_local (N, in_local) = dy W ; dW += dyᵀ x
  void backward(const Tensor& dx, const Tensor& dy, const Tensor& x) const;
};

struct VocabParallelEmbedding {
  Param* weight = nullptr;  // (V_local, d); global rows [vocab_start, vocab_start+V_local)
  int64_t vocab_start() const { return weight->shard_offset; }
  int64_t rows() const { return weight->shape[0]; }
  int64_t dim() const { return weight->shape[1]; }
  // y (N, d); ids (N, I32) in the backend's memory
  void forward(Comm& tp, const Tensor& y, const Tensor& ids) const;
  void backward(const Tensor& dy, const Tensor& ids) const;
};

}  // namespace bupo
