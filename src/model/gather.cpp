#include "model/gather.hpp"

#include <cstring>

#include "core/error.hpp"
#include "parallel/mpi_comm.hpp"

namespace bupo {

namespace {
template <typename F>
void for_each_row(const Param& p, F&& f) {  // f(local_offset, full_offset, count)
  if (p.shard_dim < 0 || p.shape == p.full_shape) {
    f(0, 0, p.numel());
    return;
  }
  if (p.shard_dim == 0) {
    const int64_t cols = p.shape.size() == 2 ? p.shape[1] : 1;
    f(0, p.shard_offset * cols, p.numel());
    return;
  }
  const int64_t rows = p.shape[0], cl = p.shape[1], cf = p.full_shape[1];
  for (int64_t i = 0; i < rows; ++i) f(i * cl, i * cf + p.shard_offset, cl);
}

// A blob of floats; integers and names are stored bitwise.
struct Blob {
  std::vector<float> v;
  void put_i64(int64_t x) {
    float f[2];
    std::memcpy(f, &x, 8);
    v.push_back(f[0]);
    v.push_back(f[1]);
  }
  void put_str(const std::string& s) {
    put_i64(static_cast<int64_t>(s.size()));
    const size_t n = (s.size() + 3) / 4, o = v.size();
    v.resize(o + n, 0.0f);
    std::memcpy(v.data() + o, s.data(), s.size());
  }
};
struct Reader {
  const std::vector<float>& v;
  size_t o = 0;
  int64_t i64() {
    int64_t x;
    std::memcpy(&x, v.data() + o, 8);
    o += 2;
    return x;
  }
  std::string str() {
    const auto n = static_cast<size_t>(i64());
    std::string s(reinterpret_cast<const char*>(v.data() + o), n);
    o += (n + 3) / 4;
    return s;
  }
};
}  // namespace

void copy_shard_from_full(const Param& p, const float* full, float* dst) {
  for_each_row(p, [&](int64_t lo, int64_t fo, int64_t n) { std::copy_n(full + fo, n, dst + lo); });
}
void copy_shard_to_full(const Param& p, const float* src, float* full) {
  for_each_row(p, [&](int64_t lo, int64_t fo, int64_t n) { std::copy_n(src + lo, n, full + fo); });
}

std::unique_ptr<Model> gather_model(Model& m, const std::vector<const std::vector<float>*>& arenas,
                                    std::vector<std::vector<float>>* full_arenas,
                                    const std::vector<int64_t>* ints,
                                    std::vector<int64_t>* full_ints) {
  ParallelContext& pc = m.parallel();
  Comm& w = *pc.world;
  // this rank's contribution: the counted parameters of the first DP replica, each as
  // name, int, numel, shard_dim, shard_offset, ndim, dims, weights, arenas...
  Blob b;
  if (pc.dp_rank() == 0) {
    const std::vector<float> weights = m.params().weights_to_host();
    const auto& ps = m.params().all();
    for (size_t i = 0; i < ps.size(); ++i) {
      const Param& p = ps[i];
      if (!p.counted) continue;
      b.put_str(p.name);
      b.put_i64(ints ? (*ints)[i] : 0);
      b.put_i64(p.numel());
      b.put_i64(p.shard_dim);
      b.put_i64(p.shard_offset);
      b.put_i64(static_cast<int64_t>(p.shape.size()));
      for (int64_t dsz : p.shape) b.put_i64(dsz);
      b.v.insert(b.v.end(), weights.data() + p.offset, weights.data() + p.offset + p.numel());
      for (const auto* a : arenas)
        b.v.insert(b.v.end(), a->data() + p.offset, a->data() + p.offset + p.numel());
    }
  }
  if (w.rank() != 0) {
    Blob n;
    n.put_i64(static_cast<int64_t>(b.v.size()));
    w.send(n.v.data(), n.v.size(), 0);
    if (!b.v.empty()) w.send(b.v.data(), b.v.size(), 0);
    w.barrier();
    return nullptr;
  }
  auto full = std::make_unique<Model>(m.config(), ParallelContext::single(), cpu_backend());
  ParamStore& fs = full->params();
  if (full_arenas)
    full_arenas->assign(arenas.size(), std::vector<float>(fs.total_elements(), 0.0f));
  if (full_ints) full_ints->assign(fs.all().size(), 0);
  std::vector<bool> seen(fs.all().size(), false);
  auto absorb = [&](const std::vector<float>& v, int src) {
    Reader r{v};
    while (r.o < v.size()) {
      const std::string name = r.str();
      const int64_t iv = r.i64();
      Param* fp = fs.find(name);
      BUPO_CHECK(fp != nullptr, "gather_model: ", rank_name(w.world_rank_of(src)),
                 " sent unknown parameter '", name, "'");
      Param shard = *fp;  // the sender's geometry
      const int64_t n = r.i64();
      shard.shard_dim = static_cast<int>(r.i64());
      shard.shard_offset = r.i64();
      shard.shape.assign(static_cast<size_t>(r.i64()), 0);
      for (auto& dsz : shard.shape) dsz = r.i64();
      BUPO_CHECK(shard.numel() == n, "gather_model: inconsistent shard of '", name, "'");
      const auto idx = static_cast<size_t>(fp - fs.all().data());
      copy_shard_to_full(shard, v.data() + r.o, fp->w);
      r.o += static_cast<size_t>(n);
      for (size_t a = 0; a < arenas.size(); ++a) {
        if (full_arenas)
          copy_shard_to_full(shard, v.data() + r.o, (*full_arenas)[a].data() + fp->offset);
        r.o += static_cast<size_t>(n);
      }
      if (full_ints) (*full_ints)[idx] = iv;
      seen[idx] = true;
    }
  };
  absorb(b.v, 0);
  for (int src = 1; src < w.size(); ++src) {
    std::vector<float> hdr(2);
    w.recv(hdr.data(), hdr.size(), src);
    const int64_t n = Reader{hdr}.i64();
    if (n == 0) continue;
    std::vector<float> v(static_cast<size_t>(n));
    w.recv(v.data(), v.size(), src);
    absorb(v, src);
  }
  w.barrier();
  for (size_t i = 0; i < seen.size(); ++i)
    BUPO_CHECK(seen[i], "gather_model: no rank holds parameter '", fs.all()[i].name, "'");
  return full;
}

}  // namespace bupo
