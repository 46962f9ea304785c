#include "parallel/zero.hpp"

#include <algorithm>

#include "core/error.hpp"
#include "model/params.hpp"

namespace bupo {

namespace {
constexpr int64_t kPartAlign = 16;  // 64-byte parts: every owned run starts on a vector boundary
}

ZeroLayout::ZeroLayout(int64_t total, int ranks, int rank, int64_t bucket_elems)
    : ranks_(ranks), rank_(rank), total_(total) {
  BUPO_CHECK(ranks >= 1 && rank >= 0 && rank < ranks, "ZeRO layout: rank ", rank, " of ", ranks);
  BUPO_CHECK(total >= 0 && bucket_elems >= 1, "ZeRO layout: ", total, " elements in buckets of ",
             bucket_elems);
  // a bucket is a whole number of aligned parts, so only the arena's last bucket is short
  const int64_t unit = kPartAlign * ranks;
  bucket_ = std::max(unit, (bucket_elems + unit - 1) / unit * unit);
  for (int64_t b = 0; b < total; b += bucket_) {
    Bucket k;
    k.begin = b;
    k.len = std::min(bucket_, total - b);
    k.part = (k.len + unit - 1) / unit * kPartAlign;
    k.shard_offset = shard_;
    shard_ += k.part;
    part_max_ = std::max(part_max_, k.part);
    buckets_.push_back(k);
  }
}

std::pair<int64_t, int64_t> ZeroLayout::owned(size_t b, int r) const {
  const Bucket& k = buckets_[b];
  const int64_t end = k.begin + k.len;
  const int64_t lo = std::min(end, k.begin + static_cast<int64_t>(r) * k.part);
  return {lo, std::min(end, lo + k.part)};
}

size_t ZeroLayout::bucket_of(int64_t element) const {
  return static_cast<size_t>(element / bucket_);
}

size_t ZeroLayout::scratch_bytes() const {
  // the gathered (ranks · part) and the own (part) buffers, each carved at Arena::kAlign
  return static_cast<size_t>((static_cast<int64_t>(ranks_) + 1) * part_max_) * sizeof(float) +
         2 * Arena::kAlign;
}

namespace {
// One bucket's buffers in the backend's scratch (ZeroLayout::scratch_bytes): every rank's part
// of it, gathered or to be scattered, and this rank's own.
struct BucketBuffers {
  Tensor all, mine;
};
// f(bucket, [lo, hi) this rank owns, buffers) for every bucket that holds a trained parameter.
template <class F>
void for_trained_buckets(const ParamStore& params, const ZeroLayout& z, F&& f) {
  Backend& be = params.backend();
  const std::vector<char> on = trained_buckets(params, z);
  ArenaScope scope(be.scratch());
  const BucketBuffers buf{be.scratch().alloc_f32({z.ranks() * z.part_max()}),
                          be.scratch().alloc_f32({z.part_max()})};
  for (size_t b = 0; b < z.buckets().size(); ++b)
    if (on[b]) f(z.buckets()[b], z.owned(b), buf);
}
}  // namespace

std::vector<char> trained_buckets(const ParamStore& params, const ZeroLayout& z) {
  std::vector<char> on(z.buckets().size(), 0);
  for (const Param& p : params.all()) {
    if (!p.has_grad || p.numel() == 0) continue;
    const auto lo = static_cast<int64_t>(p.offset);
    for (size_t b = z.bucket_of(lo); b <= z.bucket_of(lo + p.numel() - 1); ++b) on[b] = 1;
  }
  return on;
}

GradReduceStats reduce_scatter_grads(ParamStore& params, const ZeroLayout& z, Comm& dp_host,
                                     Comm& dp_dev) {
  GradReduceStats st;
  BUPO_CHECK(
      z.ranks() == dp_dev.size() && z.total() == static_cast<int64_t>(params.total_elements()),
      "ZeRO: a layout of ", z.total(), " elements over ", z.ranks(), " ranks for a model of ",
      params.total_elements(), " elements over ", dp_dev.size());
  agree_on_trained_params(params, dp_host);
  if (z.ranks() == 1) return st;
  Backend& be = params.backend();
  const Tensor G = params.grad_arena();
  for_trained_buckets(params, z, [&](const auto& k, auto owned, const BucketBuffers& buf) {
    const int64_t padded = z.ranks() * k.part;
    be.copy(buf.all.flat(0, k.len), G.flat(k.begin, k.len));
    if (padded > k.len) be.zero(buf.all.flat(k.len, padded - k.len));
    dp_dev.reduce_scatter_sum(buf.all.f32(), buf.mine.f32(), static_cast<size_t>(k.part));
    const auto [lo, hi] = owned;
    if (hi > lo) be.copy(G.flat(lo, hi - lo), buf.mine.flat(0, hi - lo));
    st.buckets += 1;
    st.bytes += padded * static_cast<int64_t>(sizeof(float));
  });
  return st;
}

double owned_grad_sumsq(const ParamStore& params, const ZeroLayout& z) {
  Backend& be = params.backend();
  const Tensor G = params.grad_arena();
  double total = 0.0;
  for (const Param& p : params.all()) {
    if (!p.has_grad || p.g == nullptr || !p.counted) continue;
    const auto lo = static_cast<int64_t>(p.offset);
    z.for_owned(lo, lo + p.numel(),
                [&](int64_t a, int64_t, int64_t n) { total += be.sum_squares(G.flat(a, n)); });
  }
  return total;
}

void allgather_weights(ParamStore& params, const ZeroLayout& z, Comm& dp_dev) {
  if (z.ranks() == 1) return;
  Backend& be = params.backend();
  const Tensor W = params.weight_arena();
  for_trained_buckets(params, z, [&](const auto& k, auto owned, const BucketBuffers& buf) {
    const auto [lo, hi] = owned;
    if (hi > lo) be.copy(buf.mine.flat(0, hi - lo), W.flat(lo, hi - lo));
    if (k.part > hi - lo) be.zero(buf.mine.flat(hi - lo, k.part - (hi - lo)));
    dp_dev.allgather(buf.mine.f32(), buf.all.f32(), static_cast<size_t>(k.part));
    be.copy(W.flat(k.begin, k.len), buf.all.flat(0, k.len));
  });
}

std::vector<float> gather_shards(const std::vector<float>& shard, const ZeroLayout& z,
                                 Comm& dp_host) {
  BUPO_CHECK(static_cast<int64_t>(shard.size()) == z.shard_elements(), "ZeRO: a shard of ",
             shard.size(), " elements; the layout has ", z.shard_elements());
  std::vector<float> full(static_cast<size_t>(z.total()), 0.0f), all;
  // bucket by bucket: each call moves at most one bucket, within MPI's int counts
  for (size_t b = 0; b < z.buckets().size(); ++b) {
    const auto& k = z.buckets()[b];
    const auto part = static_cast<size_t>(k.part);
    const float* mine = shard.data() + k.shard_offset;
    all.resize(part * static_cast<size_t>(z.ranks()));
    if (z.ranks() == 1)
      std::copy(mine, mine + part, all.begin());
    else
      dp_host.allgather(mine, all.data(), part);
    for (int r = 0; r < z.ranks(); ++r) {
      const auto [lo, hi] = z.owned(b, r);
      const float* src = all.data() + static_cast<size_t>(r) * part;
      std::copy(src, src + (hi - lo), full.begin() + lo);
    }
  }
  return full;
}

std::vector<float> slice_shard(const std::vector<float>& full, const ZeroLayout& z) {
  BUPO_CHECK(static_cast<int64_t>(full.size()) == z.total(), "ZeRO: ", full.size(),
             " elements for a layout of ", z.total());
  std::vector<float> shard(static_cast<size_t>(z.shard_elements()), 0.0f);
  for (size_t b = 0; b < z.buckets().size(); ++b) {
    const auto [lo, hi] = z.owned(b);
    std::copy(full.begin() + lo, full.begin() + hi, shard.begin() + z.buckets()[b].shard_offset);
  }
  return shard;
}

}  // namespace bupo
