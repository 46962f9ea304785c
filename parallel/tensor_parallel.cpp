#include "parallel/tensor_parallel.hpp"

namespace bupo {

void ColumnParallelLinear::forward(const Tensor& y, const Tensor& x) const {
  weight->backend->linear_forward(y, x, weight->compute_weight(),
                                  bias ? bias->compute_weight() : Tensor{});
}
void ColumnParallelLinear::backward(const Tensor& dx, const Tensor& dy, const Tensor& x) const {
  weight->backend->linear_backward(dx, weight->grad(), bias ? bias->grad() : Tensor{}, dy, x,
                                   weight->compute_weight(), /*accumulate_dx=*/true);
  weight->has_grad = true;
  if (bias) bias->has_grad = true;
}

void RowParallelLinear::forward(Comm& tp, const Tensor& y, const Tensor& x) const {
  weight->backend->linear_forward(y, x, weight->compute_weight(), Tensor{});
  reduce_from_tp_region(tp, y);
}
void RowParallelLinear::backward(const Tensor& dx, const Tensor& dy, const Tensor& x) const {
  weight->backend->linear_backward(dx, weight->grad(), Tensor{}, dy, x, weight->compute_weight());
  weight->has_grad = true;
}

void VocabParallelEmbedding::forward(Comm& tp, const Tensor& y, const Tensor& ids) const {
  weight->backend->embedding_forward(y, ids, weight->compute_weight(), vocab_start());
  reduce_from_tp_region(tp, y);
}
void VocabParallelEmbedding::backward(const Tensor& dy, const Tensor& ids) const {
  weight->backend->embedding_backward(weight->grad(), ids, dy, vocab_start());
  weight->has_grad = true;
}

}  // namespace bupo
