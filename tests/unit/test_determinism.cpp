// Results must not depend on the number of threads: forward, lens and backward bit-identical for
// 1 and 2 threads (OpenMP loops own disjoint outputs; BLAS splits M/N, never K).
#include <gtest/gtest.h>

#include "core/threads.hpp"
#include "lens/lens.hpp"
#include "model_fixture.hpp"

namespace bupo {
namespace {

std::pair<std::vector<float>, std::vector<float>> run(int threads) {
  set_num_threads(threads);
  auto m = test::tiny_model(Arch::Qwen3, true);
  m->params().allocate_grads();
  // long enough sequences that the BLAS and OpenMP paths actually split work
  std::vector<int32_t> s1, s2;
  for (int i = 0; i < 96; ++i) s1.push_back((i * 7) % 64);
  for (int i = 0; i < 40; ++i) s2.push_back((i * 13 + 5) % 64);
  const Batch b = Batch::from_sequences({s1, s2});
  Activations acts;
  m->forward(b, acts, true);
  const int64_t N = b.N();
  std::vector<int32_t> tgt(b.ids.begin(), b.ids.end());
  std::vector<float> ent(N), lp(N), g(N, -0.01f), dY(N * m->hidden(), 0.0f);
  Lens lens{&m->unembedding(), nullptr, LensMode::Raw};
  const Tensor dYt = Tensor::host(dY.data(), {N, m->hidden()});
  lens.forward(acts.final_out, tgt.data(), ent.data(), lp.data());
  lens.backward(acts.final_out, tgt.data(), g.data(), g.data(), dYt);
  m->backward_from_output(b, acts, dYt);
  std::vector<float> grads;
  for (const auto& p : m->params().all()) grads.insert(grads.end(), p.g, p.g + p.numel());
  ent.insert(ent.end(), lp.begin(), lp.end());
  return {ent, grads};
}

TEST(Determinism, BitIdenticalForOneAndTwoThreads) {
  const auto a = run(1);
  const auto b = run(2);
  set_num_threads(0);
  ASSERT_EQ(a.first.size(), b.first.size());
  for (size_t i = 0; i < a.first.size(); ++i)
    ASSERT_EQ(a.first[i], b.first[i]) << "lens output " << i;
  for (size_t i = 0; i < a.second.size(); ++i)
    ASSERT_EQ(a.second[i], b.second[i]) << "gradient " << i;
}

}  // namespace
}  // namespace bupo
