// The tensor × pipeline × data parallel layout (Megatron-LM's ordering, anchors.md §1):
//   world rank = tp_rank + tp·(dp_rank + dp·pp_rank)
// TP groups are adjacent ranks (one node's NVLink domain), then DP, then PP. Every check runs
// before any work starts and names the key and what was expected.
#pragma once
#include <string>
#include <vector>

#include "model/config.hpp"
#include "parallel/comm.hpp"

namespace bupo {

struct ParallelLayout {
  int tp = 1, pp = 1, dp = 1;
  // Pipeline stage weighting: layers on the first / last stage (0: an even split). Megatron's
  // decoder_first/last_pipeline_num_layers — the first stage also embeds, the last one holds the
  // output head, so giving them fewer layers balances the pipeline.
  int first_stage_layers = 0, last_stage_layers = 0;
  int world() const { return tp * pp * dp; }
};

struct Coords {
  int tp = 0, pp = 0, dp = 0;
};
Coords coords_of(const ParallelLayout& lay, int world_rank);
int rank_of(const ParallelLayout& lay, Coords c);

// Layers per stage (sum = L); errors name `source` and the parallel.* key.
std::vector<int> stage_layer_counts(const ParallelLayout& lay, int L, const std::string& source);
// ParallelContext::stage_begin for a model of L layers: stage s owns layers [b[s], b[s+1]).
std::vector<int> stage_begins(const ParallelLayout& lay, int L, const std::string& source);
// Checks the layout against the world size and the model: tp divides the attention heads,
// the KV heads (or is a multiple of them: KV heads are then replicated), the FFN width and the
// vocabulary; pp ≤ layers with every stage non-empty.
void validate_layout(const ParallelLayout& lay, int world_size, const ModelConfig& m,
                     const std::string& source);
// The communicators of this rank (collective over MPI_COMM_WORLD; an MpiSession must exist).
// On a world of one, SelfComms.
ParallelContext make_parallel_context(const ParallelLayout& lay, int L, const std::string& source);

}  // namespace bupo
