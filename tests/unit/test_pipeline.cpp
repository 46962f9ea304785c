// The 1F1B schedule on its own (parallel/pipeline.hpp), for every stage count × micro-batch count:
// it is the order the trainer ran before the engine moved to parallel/, every stage runs each
// forward and backward once, it is deadlock-free under the Comm send/recv semantics, in-flight
// activations stay within the stage count, and its bubble is (p−1)/(m+p−1).
#include <gtest/gtest.h>

#include <set>

#include "core/error.hpp"
#include "parallel/pipeline.hpp"

namespace bupo {
namespace {

TEST(Pipeline, OneFOneBIsWarmUpThenAlternationThenCoolDown) {
  // 4 stages, 6 micro-batches, stage 1: w = 2 warm-up forwards
  const auto s = one_f_one_b(1, 4, 6);
  using A = PipeAction;
  const std::vector<PipeStep> want = {{A::Forward, 0},  {A::Forward, 1},  {A::Forward, 2},
                                      {A::Backward, 0}, {A::Forward, 3},  {A::Backward, 1},
                                      {A::Forward, 4},  {A::Backward, 2}, {A::Forward, 5},
                                      {A::Backward, 3}, {A::Backward, 4}, {A::Backward, 5}};
  EXPECT_EQ(s, want);
  // the last stage alternates from the start; one stage is forward-then-backward per micro-batch
  EXPECT_EQ(one_f_one_b(3, 4, 2),
            (std::vector<PipeStep>{
                {A::Forward, 0}, {A::Backward, 0}, {A::Forward, 1}, {A::Backward, 1}}));
  EXPECT_TRUE(one_f_one_b(0, 3, 0).empty());
  EXPECT_THROW(one_f_one_b(3, 3, 1), Error);
}

TEST(Pipeline, EveryLayoutRunsEachActionOnceWithoutDeadlockWithinMemoryAndBubble) {
  for (int p = 1; p <= 8; ++p)
    for (int64_t m = 1; m <= 16; ++m) {
      const PipeSchedule s = one_f_one_b_schedule(p, m);
      for (int st = 0; st < p; ++st) {
        std::multiset<int64_t> f, b;
        for (const PipeStep& a : s.per_stage[static_cast<size_t>(st)])
          (a.action == PipeAction::Forward ? f : b).insert(a.micro);
        for (int64_t i = 0; i < m; ++i) {
          ASSERT_EQ(f.count(i), 1u) << p << "x" << m << " stage " << st;
          ASSERT_EQ(b.count(i), 1u) << p << "x" << m << " stage " << st;
        }
      }
      // unit forwards, double-cost backwards (any uniform costs give the same bubble)
      const PipeSimulation r = simulate(s, 1.0, 2.0);
      ASSERT_TRUE(r.completed) << p << " stages x " << m << " micro-batches: " << r.error;
      EXPECT_NEAR(r.bubble, one_f_one_b_bubble(p, m), 1e-12) << p << "x" << m;
      EXPECT_DOUBLE_EQ(r.makespan, static_cast<double>(m + p - 1) * 3.0) << p << "x" << m;
      for (int st = 0; st < p; ++st) {
        const int64_t peak = r.peak_in_flight[static_cast<size_t>(st)];
        EXPECT_LE(peak, p - st) << p << "x" << m << " stage " << st;
        EXPECT_EQ(peak, std::min<int64_t>(p - st, m)) << p << "x" << m << " stage " << st;
      }
    }
}

TEST(Pipeline, TheSimulationFindsDeadlocksAndOutOfOrderReceives) {
  // all forwards then all backwards (GPipe) completes but holds m activations per stage
  PipeSchedule gpipe;
  gpipe.stages = 2;
  gpipe.micros = 3;
  for (int st = 0; st < 2; ++st) {
    std::vector<PipeStep> v;
    for (int64_t i = 0; i < 3; ++i) v.push_back({PipeAction::Forward, i});
    for (int64_t i = 0; i < 3; ++i) v.push_back({PipeAction::Backward, i});
    gpipe.per_stage.push_back(v);
  }
  const PipeSimulation g = simulate(gpipe, 1, 2);
  EXPECT_TRUE(g.completed);
  EXPECT_EQ(g.peak_in_flight[0], 3);
  // stage 0 wants micro 0's gradient before stage 1 could ever have its activations: deadlock
  PipeSchedule dead = gpipe;
  dead.per_stage[0] = {{PipeAction::Backward, 0}, {PipeAction::Forward, 0}};
  dead.per_stage[1] = {{PipeAction::Forward, 0}, {PipeAction::Backward, 0}};
  dead.micros = 1;
  const PipeSimulation d = simulate(dead, 1, 2);
  EXPECT_FALSE(d.completed);
  EXPECT_NE(d.error.find("deadlock"), std::string::npos) << d.error;
  // stages disagreeing on the forward order would consume each other's messages
  PipeSchedule swapped = gpipe;
  std::swap(swapped.per_stage[1][0], swapped.per_stage[1][1]);
  const PipeSimulation w = simulate(swapped, 1, 2);
  EXPECT_FALSE(w.completed);
  EXPECT_NE(w.error.find("would receive micro-batch 0"), std::string::npos) << w.error;
}

TEST(Pipeline, TheRunnerCallsTheCallbacksInScheduleOrder) {
  std::vector<std::pair<char, int64_t>> calls;
  run_pipeline_stage(
      one_f_one_b(0, 2, 3), [&](int64_t i) { calls.emplace_back('F', i); },
      [&](int64_t i) { calls.emplace_back('B', i); });
  const std::vector<std::pair<char, int64_t>> want = {{'F', 0}, {'F', 1}, {'B', 0},
                                                      {'F', 2}, {'B', 1}, {'B', 2}};
  EXPECT_EQ(calls, want);
}

}  // namespace
}  // namespace bupo
