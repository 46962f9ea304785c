// ZeRO-1, the distributed optimizer (Megatron-Core's DistributedOptimizer, llm.c's zero.cuh):
// AdamW's moments sharded over the data-parallel group, so each replica keeps 1/dp of them.
//
// The parameter arena (every parameter at its offset, ParamStore) is cut into fixed buckets of
// `bucket_elems` elements, independent of which parameters train in a step, so ownership never
// moves: BuPO's phase 1 trains a prefix of the arena, phase 2 all of it, and each element's
// moments stay on one rank throughout. Bucket b is split into dp equal parts (the last rank's may
// be short or empty); data-parallel rank r owns part r of every bucket. One optimizer step:
//   1. reduce_scatter_grads: each bucket holding a trained parameter is reduce-scattered, so the
//      owner of an element holds its gradient summed over the replicas (the rest of the local
//      gradient arena keeps values nothing reads),
//   2. owned_grad_sumsq: the global norm from the owned parts (summed over dp, tp and pp),
//   3. AdamW updates the owned elements only (optim/adamw.hpp with a ZeroShard),
//   4. allgather_weights: each of those buckets is all-gathered, and every replica holds the
//      whole updated model again.
// Communication per step equals ZeRO-0's all-reduce (a reduce-scatter plus an all-gather), in
// buckets padded to a multiple of dp; checkpoints hold the consolidated state (the moments are
// gathered when written and sliced when read), so a run resumes under any layout and ZeRO setting.
#pragma once
#include <cstdint>
#include <utility>
#include <vector>

#include "parallel/comm.hpp"
#include "parallel/grads.hpp"

namespace bupo {

class ParamStore;

class ZeroLayout {
 public:
  struct Bucket {
    int64_t begin = 0, len = 0;  // arena elements [begin, begin + len)
    int64_t part = 0;            // elements per rank (ranks · part >= len)
    int64_t shard_offset = 0;    // where this bucket's part starts in a rank's compact shard
  };
  ZeroLayout() = default;
  // `total` arena elements over `ranks` data-parallel ranks; this is rank `rank`.
  ZeroLayout(int64_t total, int ranks, int rank, int64_t bucket_elems);

  int ranks() const { return ranks_; }
  int rank() const { return rank_; }
  int64_t total() const { return total_; }
  const std::vector<Bucket>& buckets() const { return buckets_; }
  // Elements of a rank's compact shard (Σ part over buckets; the same on every rank).
  int64_t shard_elements() const { return shard_; }
  int64_t part_max() const { return part_max_; }  // the largest part (a full bucket's)
  // Arena range [first, second) of bucket b owned by rank r (empty when first == second).
  std::pair<int64_t, int64_t> owned(size_t b, int r) const;
  std::pair<int64_t, int64_t> owned(size_t b) const { return owned(b, rank_); }
  size_t bucket_of(int64_t element) const;
  // f(arena_offset, shard_offset, n) for every owned run of the arena range [lo, hi), in order.
  template <class F>
  void for_owned(int64_t lo, int64_t hi, F&& f) const {
    if (hi <= lo) return;
    for (size_t b = bucket_of(lo); b < buckets_.size() && buckets_[b].begin < hi; ++b) {
      const auto [a, z] = owned(b);
      const int64_t s = std::max(a, lo), e = std::min(z, hi);
      if (e > s) f(s, buckets_[b].shard_offset + (s - a), e - s);
    }
  }
  // The scratch bytes the collectives below need (one bucket's send and receive buffers).
  size_t scratch_bytes() const;

 private:
  int ranks_ = 1, rank_ = 0;
  int64_t total_ = 0, bucket_ = 1, shard_ = 0, part_max_ = 0;
  std::vector<Bucket> buckets_;
};

// Which buckets hold an element of a parameter with Param::has_grad.
std::vector<char> trained_buckets(const ParamStore& params, const ZeroLayout& z);

// Steps 1, 2 and 4 above. dp_host agrees on the participating parameters (host flags), dp_dev
// moves the backend memory (the same group).
GradReduceStats reduce_scatter_grads(ParamStore& params, const ZeroLayout& z, Comm& dp_host,
                                     Comm& dp_dev);
double owned_grad_sumsq(const ParamStore& params, const ZeroLayout& z);
void allgather_weights(ParamStore& params, const ZeroLayout& z, Comm& dp_dev);

// The consolidated arena-layout array out of every rank's compact shard (gathered over dp_host,
// host memory), and this rank's compact shard out of a consolidated array.
std::vector<float> gather_shards(const std::vector<float>& shard, const ZeroLayout& z,
                                 Comm& dp_host);
std::vector<float> slice_shard(const std::vector<float>& full, const ZeroLayout& z);

}  // namespace bupo
