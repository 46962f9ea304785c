#include "parallel/tensor_parallel.hpp"

#include "kernels/cpu/embedding.hpp"
#include "kernels/cpu/linear.hpp"

namespace bupo {

void ColumnParallelLinear::forward(float* y, const float* x, int64_t N) const {
  cpu::linear_forward(y, x, weight->w, bias ? bias->w : nullptr, N, in(), out_local());
}
void ColumnParallelLinear::backward(float* dx, const float* dy, const float* x, int64_t N) const {
  cpu::linear_backward(dx, weight->g, bias ? bias->g : nullptr, dy, x, weight->w, N, in(),
                       out_local(), /*accumulate_dx=*/true);
  weight->has_grad = true;
  if (bias) bias->has_grad = true;
}

void RowParallelLinear::forward(Comm& tp, float* y, const float* x, int64_t N) const {
  cpu::linear_forward(y, x, weight->w, nullptr, N, in_local(), out());
  reduce_from_tp_region(tp, y, N * out());
}
void RowParallelLinear::backward(float* dx, const float* dy, const float* x, int64_t N) const {
  cpu::linear_backward(dx, weight->g, nullptr, dy, x, weight->w, N, in_local(), out());
  weight->has_grad = true;
}

void VocabParallelEmbedding::forward(Comm& tp, float* y, const int32_t* ids, int64_t N) const {
  cpu::embedding_forward(y, ids, weight->w, N, dim(), vocab_start(), rows());
  reduce_from_tp_region(tp, y, N * dim());
}
void VocabParallelEmbedding::backward(const float* dy, const int32_t* ids, int64_t N) const {
  cpu::embedding_backward(weight->g, ids, dy, N, dim(), vocab_start(), rows());
  weight->has_grad = true;
}

}  // namespace bupo
