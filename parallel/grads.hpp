// Gradient reductions of a parallel optimizer step (after every micro-batch's backward):
//   1. partial gradients inside the model-parallel group (Model::reduce_partial_grads),
//   2. data parallelism: the gradients summed over the DP replicas with bucketed all-reduces
//      (PyTorch DDP / Megatron style buckets, in reverse parameter order — the order the backward
//      produces them — skipping parameters no replica touched, e.g. the layers above the BuPO
//      layer in phase 1),
//   3. the global gradient norm over TP × PP (each parameter counted once, Param::counted).
// Losses are normalised by the global token count, so the DP sum is the single-rank gradient.
#pragma once
#include "model/model.hpp"

namespace bupo {

struct GradReduceStats {
  int64_t buckets = 0;
  int64_t bytes = 0;
};

// Every replica marks the parameters any replica trained (Param::has_grad; a replica that had no
// tokens holds zero gradients for them), so all take part in the same reductions and updates.
void agree_on_trained_params(ParamStore& params, Comm& dp_host);
// dp_host agrees on the participating parameters (host flags); dp_dev sums the gradient buckets
// (device memory: the same group's communicator for the backend's memory).
GradReduceStats allreduce_grads(ParamStore& params, Comm& dp_host, Comm& dp_dev, double bucket_mb);
// sqrt of the sum over the model-parallel ranks (tp, pp) of this rank's part of the squared
// gradient norm: grad_sumsq of its counted parameters, or under ZeRO-1 the DP-summed owned parts.
double model_parallel_grad_norm(ParallelContext& pc, double local_sumsq);

}  // namespace bupo
