// No allocation in the step loop (llm.c's memory discipline): the backend's memory blocks are
// counted per role; a training step — rollouts with their KV cache and sampling buffers, old
// log-probs, the 1F1B update, diagnostics, validation — allocates nothing after the first, and
// neither does generation once its memory is reserved or has been used once.
#include <gtest/gtest.h>

#include <filesystem>

#include "backend/cpu/cpu_backend.hpp"
#include "gen/generate.hpp"
#include "model_fixture.hpp"
#include "rl/config.hpp"
#include "rl/trainer.hpp"

namespace fs = std::filesystem;

namespace bupo {
namespace {

const char* kRun = R"(
[model]
template = "plain"
init = { arch = "qwen3", layers = 3, hidden = 64, heads = 2, kv_heads = 1, head_dim = 32, ffn = 128, seed = 3 }
[data]
train = "builtin:arithmetic"
arithmetic = { digits = 2, ops = "+", size = 500 }
[warmup]
sft_steps = 3
sft_batch = 8
[rollout]
n = 4
max_tokens = 10
[trainer]
steps = 5
prompts_per_step = 4
mini_batch_prompts = 2
micro_batch_seqs = 3
checkpoint_every = 2
[optim]
lr = 1e-3
[algorithm]
entropy_coef = 0.01
kl_coef = 0.01
[bupo]
internal_layer = 2
internal_steps = 2
[diagnostics]
every = 1
tokens = 40
[validation]
every = 2
sets = ["builtin:arithmetic"]
max_prompts = 6
n = 2
)";

// kRun's backend block allocations per step (with `extra` overrides), in its own run folder.
std::vector<uint64_t> step_allocations_of(const std::string& name,
                                          std::vector<std::string> extra = {}) {
  const fs::path dir =
      fs::temp_directory_path() / ("bupo_alloc_" + name + std::to_string(::getpid()));
  fs::remove_all(dir);
  rl::TrainOptions o;
  o.quiet = true;
  o.overwrite = true;
  extra.push_back("trainer.out_dir=\"" + dir.string() + "\"");
  std::vector<uint64_t> a;
  {
    rl::Trainer t(rl::parse_train_config(kRun, "alloc.toml", extra), o);
    EXPECT_EQ(t.run(), 0);
    a = t.step_allocations();
  }
  fs::remove_all(dir);
  return a;
}

TEST(Allocations, TrainingStepsAfterTheFirstAllocateNothing) {
  const auto a = step_allocations_of("grpo");
  ASSERT_EQ(a.size(), 5u);
  // both BuPO phases, validation (steps 2 and 4) and checkpoints (2, 4, 5) are among the steps
  for (size_t s = 1; s < a.size(); ++s)
    EXPECT_EQ(a[s], 0u) << "step " << s + 1 << " allocated " << a[s] << " backend block(s)";
  // the reservation is exact enough that even the first step did not grow anything
  EXPECT_EQ(a[0], 0u) << "step 1 allocated " << a[0] << " backend block(s)";
}

// PPO: the critic's values pass, its 1F1B update and its checkpoints share the reservation too.
TEST(Allocations, TrainingStepsWithACriticAllocateNothing) {
  const auto a = step_allocations_of("ppo", {"algorithm.adv_estimator=\"gae\""});
  ASSERT_EQ(a.size(), 5u);
  for (size_t s = 0; s < a.size(); ++s)
    EXPECT_EQ(a[s], 0u) << "step " << s + 1 << " allocated " << a[s] << " backend block(s)";
}

std::unique_ptr<Model> tiny_on(Backend& be) {
  auto m = std::make_unique<Model>(test::tiny_config(), ParallelContext::single(), be);
  m->init_random(7, 0.2f);
  return m;
}

TEST(Allocations, GenerationReusesItsCacheAndBuffers) {
  CpuBackend be;  // fresh pools: nothing left from other tests of this process
  auto m = tiny_on(be);
  GenerateOptions g;
  g.max_new_tokens = 12;
  g.temperature = 1.0f;
  g.seed = 5;
  const std::vector<std::vector<int32_t>> prompts = {{1, 5, 9}, {4, 4, 18, 50, 11}, {7}};
  generate(*m, prompts, 3, g);  // the first call sizes the pools
  const uint64_t before = be.total_allocations();
  const auto out = generate(*m, prompts, 3, g);
  EXPECT_EQ(be.total_allocations(), before) << "a second identical generation allocated";
  ASSERT_EQ(out.size(), 9u);
  // and with the memory reserved up-front, a fresh backend's first generation allocates nothing
  CpuBackend be2;
  auto m2 = tiny_on(be2);
  MemoryPlan p;
  p.max_tokens = 64;
  p.max_seq_len = 5 + 12;
  p.max_sequences = 9;
  p.in_flight = 2;
  p.extra_scratch = 9 * (32 + 64 + 16) * 8;
  m2->reserve(p);
  m2->reserve_kv_cache(9, 5 + 12);
  const uint64_t b2 = be2.total_allocations();
  generate(*m2, prompts, 3, g);
  EXPECT_EQ(be2.total_allocations(), b2) << "generation allocated despite the reservation";
}

}  // namespace
}  // namespace bupo
