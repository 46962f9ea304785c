#include "parallel/topology.hpp"

#include "core/error.hpp"
#include "parallel/mpi_comm.hpp"

namespace bupo {

Coords coords_of(const ParallelLayout& lay, int r) {
  Coords c;
  c.tp = r % lay.tp;
  c.dp = (r / lay.tp) % lay.dp;
  c.pp = r / (lay.tp * lay.dp);
  return c;
}
int rank_of(const ParallelLayout& lay, Coords c) {
  return c.tp + lay.tp * (c.dp + lay.dp * c.pp);
}

std::vector<int> stage_layer_counts(const ParallelLayout& lay, int L, const std::string& source) {
  const int p = lay.pp;
  BUPO_CHECK(p >= 1 && p <= L, source, ": parallel.pp = ", p, ": expected 1..", L,
             " (the model has ", L, " layers; every stage needs at least one)");
  std::vector<int> n(static_cast<size_t>(p), 0);
  if (p == 1) {
    n[0] = L;
    return n;
  }
  int rest = L, first = 0, last = p - 1;
  if (lay.first_stage_layers > 0) {
    n[0] = lay.first_stage_layers;
    rest -= n[0];
    first = 1;
  }
  if (lay.last_stage_layers > 0) {
    n[static_cast<size_t>(p - 1)] = lay.last_stage_layers;
    rest -= n[static_cast<size_t>(p - 1)];
    last = p - 2;
  }
  const int mid = last - first + 1;
  BUPO_CHECK(rest >= mid && (mid > 0 || rest == 0), source,
             ": parallel.first_stage_layers = ", lay.first_stage_layers,
             " and parallel.last_stage_layers = ", lay.last_stage_layers, " leave ", rest, " of ",
             L, " layers for ", mid, " other stage(s); every stage needs at least one");
  for (int s = first; s <= last; ++s)  // even split, the remainder on the earlier middle stages
    n[static_cast<size_t>(s)] = rest / mid + (s - first < rest % mid ? 1 : 0);
  return n;
}

void validate_layout(const ParallelLayout& lay, int world_size, const ModelConfig& m,
                     const std::string& source) {
  BUPO_CHECK(lay.tp >= 1 && lay.pp >= 1 && lay.dp >= 1, source,
             ": parallel.tp, parallel.pp and parallel.dp must be >= 1 (got ", lay.tp, ", ", lay.pp,
             ", ", lay.dp, ")");
  BUPO_CHECK(lay.world() == world_size, source,
             ": parallel.tp × parallel.pp × parallel.dp = ", lay.tp, " × ", lay.pp, " × ", lay.dp,
             " = ", lay.world(), " but the job has ", world_size,
             " rank(s) (mpirun -np / srun -n)");
  const int64_t tp = lay.tp;
  BUPO_CHECK(m.num_heads % tp == 0, source, ": parallel.tp = ", tp,
             " does not divide num_attention_heads = ", m.num_heads);
  BUPO_CHECK(m.num_kv_heads % tp == 0 || tp % m.num_kv_heads == 0, source, ": parallel.tp = ", tp,
             " and num_key_value_heads = ", m.num_kv_heads,
             ": one must divide the other (KV heads are split, or replicated when fewer than TP "
             "ranks)");
  BUPO_CHECK(m.intermediate_size % tp == 0, source, ": parallel.tp = ", tp,
             " does not divide intermediate_size = ", m.intermediate_size);
  BUPO_CHECK(m.vocab_size % tp == 0, source, ": parallel.tp = ", tp,
             " does not divide vocab_size = ", m.vocab_size,
             " (pad the vocabulary to a multiple of tp)");
  stage_layer_counts(lay, static_cast<int>(m.num_layers), source);
}

std::vector<int> stage_begins(const ParallelLayout& lay, int L, const std::string& source) {
  std::vector<int> b = {1};
  for (int c : stage_layer_counts(lay, L, source)) b.push_back(b.back() + c);
  return b;
}

ParallelContext make_parallel_context(const ParallelLayout& lay, int L, const std::string& source) {
  ParallelContext pc = ParallelContext::single();
  pc.stage_begin = stage_begins(lay, L, source);
  if (!MpiSession::active() || world_size() == 1 || lay.world() == 1) {
    BUPO_CHECK(lay.world() == 1, source, ": parallel layout ", lay.tp, "×", lay.pp, "×", lay.dp,
               " needs ", lay.world(), " ranks; start bupo with mpirun -np ", lay.world(),
               " or srun -n ", lay.world(), " --mpi=pmix");
    return pc;
  }
  BUPO_CHECK(lay.world() == world_size(), source, ": parallel.tp × pp × dp = ", lay.world(),
             " but the job has ", world_size(), " ranks");
  const Coords me = coords_of(lay, world_rank());
  auto group = [&](int color, int key, const char* name) {
    MPI_Comm c = MPI_COMM_NULL;
    MPI_Comm_split(MPI_COMM_WORLD, color, key, &c);
    auto out = std::make_shared<MpiComm>(c, name);
    MPI_Comm_free(&c);
    return out;
  };
  // colour = the coordinates that stay fixed inside the group; key = the varying coordinate
  pc.tp = group(me.dp + lay.dp * me.pp, me.tp, "tp");
  pc.dp = group(me.tp + lay.tp * me.pp, me.dp, "dp");
  pc.pp = group(me.tp + lay.tp * me.dp, me.pp, "pp");
  pc.world = std::make_shared<MpiComm>(MPI_COMM_WORLD, "world");
  pc.dev = {pc.tp, pc.pp, pc.dp};  // host memory; with_device_comms() for a device backend
  return pc;
}

}  // namespace bupo
