// Pipeline schedules as data (Megatron-Core's pipeline_parallel/schedules.py): for every stage,
// the ordered list of forward and backward actions on micro-batches; generated, checked by a
// simulation under the Comm semantics, and executed by a small runner with the caller's callbacks.
//
// Comm semantics the simulation assumes (parallel/comm.hpp): send() never blocks and delivers in
// order; recv() blocks until the next message from that peer arrives. A forward of micro-batch i
// on stage s > 0 receives i's activations from stage s−1; a backward on stage s < p−1 receives
// i's gradient from stage s+1.
//
// Only the non-interleaved 1F1B schedule exists. A PipeStep carries the model chunk it runs on so
// that the interleaved schedule (v virtual stages per rank, warm-up 2·(p−s−1) + (v−1)·p) can be
// added as another generator without changing the runner or the simulation.
#pragma once
#include <cstdint>
#include <functional>
#include <string>
#include <vector>

namespace bupo {

enum class PipeAction : uint8_t { Forward, Backward };

struct PipeStep {
  PipeAction action = PipeAction::Forward;
  int64_t micro = 0;
  int chunk = 0;  // model chunk (virtual stage) of this rank; always 0 for 1F1B
  bool operator==(const PipeStep&) const = default;
};

struct PipeSchedule {
  int stages = 1;                                // p: the stages taking part
  int64_t micros = 0;                            // m: micro-batches
  std::vector<std::vector<PipeStep>> per_stage;  // [stage] → its actions in order
};

// 1F1B (PipeDream-flush): stage s of p runs w = min(p−1−s, m) warm-up forwards, then alternates
// one forward and one backward (F(i), B(i−w)), then the w remaining backwards. In-flight
// activations on stage s never exceed w+1 ≤ p; the bubble is (p−1)/(m+p−1) of the step.
std::vector<PipeStep> one_f_one_b(int stage, int stages, int64_t micros);
PipeSchedule one_f_one_b_schedule(int stages, int64_t micros);
double one_f_one_b_bubble(int stages, int64_t micros);  // (p−1)/(m+p−1)

// A discrete-event run of a schedule with every forward taking t_forward and every backward
// t_backward on every stage.
struct PipeSimulation {
  bool completed = false;  // every action ran (no deadlock)
  std::string error;       // why not: a deadlock or a receive that would take another
                           // micro-batch's message
  double makespan = 0;     // end of the last action
  double bubble = 0;       // 1 − busy/makespan of the stages (all stages equally busy)
  std::vector<int64_t> peak_in_flight;  // per stage: max forwards whose backward is pending
};
PipeSimulation simulate(const PipeSchedule& s, double t_forward, double t_backward);

// Runs one stage's actions in order.
void run_pipeline_stage(const std::vector<PipeStep>& steps,
                        const std::function<void(int64_t micro)>& forward,
                        const std::function<void(int64_t micro)>& backward);

}  // namespace bupo
