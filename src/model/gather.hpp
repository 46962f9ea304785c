// Moving whole models between a parallel layout and one process: the consolidated (single-rank)
// form is what checkpoints and Hugging Face exports hold, so a run can be resumed or analysed
// under any layout.
#pragma once
#include <memory>
#include <vector>

#include "model/model.hpp"

namespace bupo {

// The local shard of parameter p (per its shard_dim/shard_offset) out of / into the full tensor.
void copy_shard_from_full(const Param& p, const float* full, float* dst);
void copy_shard_to_full(const Param& p, const float* src, float* full);

// Collective over the world: the single-rank model on world rank 0 (nullptr elsewhere; on the CPU
// backend, whatever the source model's backend is), assembled
// from the counted copies of the first data-parallel replica. `arenas` (laid out like the weight
// arena, e.g. AdamW's moments) and per-parameter integers `ints` are gathered alongside into
// `full_arenas` / `full_ints` (root only). Memory: the full model on rank 0.
std::unique_ptr<Model> gather_model(Model& m, const std::vector<const std::vector<float>*>& arenas,
                                    std::vector<std::vector<float>>* full_arenas,
                                    const std::vector<int64_t>* ints,
                                    std::vector<int64_t>* full_ints);

}  // namespace bupo
