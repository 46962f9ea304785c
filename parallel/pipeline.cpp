#include "parallel/pipeline.hpp"

#include <algorithm>
#include <deque>

#include "core/error.hpp"

namespace bupo {

std::vector<PipeStep> one_f_one_b(int stage, int stages, int64_t micros) {
  BUPO_CHECK(stages >= 1 && stage >= 0 && stage < stages && micros >= 0, "1F1B schedule: stage ",
             stage, " of ", stages, " with ", micros, " micro-batches");
  const int64_t warm = std::min<int64_t>(stages - 1 - stage, micros);
  std::vector<PipeStep> out;
  out.reserve(static_cast<size_t>(2 * micros));
  for (int64_t i = 0; i < warm; ++i) out.push_back({PipeAction::Forward, i});
  for (int64_t i = warm; i < micros; ++i) {
    out.push_back({PipeAction::Forward, i});
    out.push_back({PipeAction::Backward, i - warm});
  }
  for (int64_t i = micros - warm; i < micros; ++i) out.push_back({PipeAction::Backward, i});
  return out;
}

PipeSchedule one_f_one_b_schedule(int stages, int64_t micros) {
  PipeSchedule s;
  s.stages = stages;
  s.micros = micros;
  for (int st = 0; st < stages; ++st) s.per_stage.push_back(one_f_one_b(st, stages, micros));
  return s;
}

double one_f_one_b_bubble(int stages, int64_t micros) {
  return micros > 0 ? static_cast<double>(stages - 1) / static_cast<double>(micros + stages - 1)
                    : 0.0;
}

PipeSimulation simulate(const PipeSchedule& s, double tf, double tb) {
  PipeSimulation r;
  const int p = s.stages;
  // channels: act[st] carries stage st → st+1 activations, grad[st] stage st+1 → st gradients;
  // each message is (micro-batch, time it was sent)
  struct Msg {
    int64_t micro;
    double at;
  };
  std::vector<std::deque<Msg>> act(static_cast<size_t>(p)), grad(static_cast<size_t>(p));
  std::vector<size_t> next(static_cast<size_t>(p), 0);
  std::vector<double> clock(static_cast<size_t>(p), 0.0);
  std::vector<int64_t> in_flight(static_cast<size_t>(p), 0);
  r.peak_in_flight.assign(static_cast<size_t>(p), 0);
  double busy = 0;
  for (bool progress = true; progress;) {
    progress = false;
    for (int st = 0; st < p; ++st) {
      const auto u = static_cast<size_t>(st);
      while (next[u] < s.per_stage[u].size()) {
        const PipeStep& a = s.per_stage[u][next[u]];
        const bool fwd = a.action == PipeAction::Forward;
        // the message this action waits for, if any
        std::deque<Msg>* in = nullptr;
        if (fwd && st > 0) in = &act[u - 1];
        if (!fwd && st < p - 1) in = &grad[u];
        double ready = clock[u];
        if (in) {
          if (in->empty()) break;  // blocked: try the other stages
          if (in->front().micro != a.micro) {
            r.error = "stage " + std::to_string(st) + " would receive micro-batch " +
                      std::to_string(in->front().micro) + "'s " +
                      (fwd ? "activations" : "gradient") + " for micro-batch " +
                      std::to_string(a.micro);
            return r;
          }
          ready = std::max(ready, in->front().at);
          in->pop_front();
        }
        clock[u] = ready + (fwd ? tf : tb);
        busy += fwd ? tf : tb;
        if (fwd && st < p - 1) act[u].push_back({a.micro, clock[u]});
        if (!fwd && st > 0) grad[u - 1].push_back({a.micro, clock[u]});
        in_flight[u] += fwd ? 1 : -1;
        r.peak_in_flight[u] = std::max(r.peak_in_flight[u], in_flight[u]);
        ++next[u];
        progress = true;
      }
    }
  }
  for (int st = 0; st < p; ++st)
    if (next[static_cast<size_t>(st)] < s.per_stage[static_cast<size_t>(st)].size()) {
      r.error = "deadlock: stage " + std::to_string(st) + " waits forever at action " +
                std::to_string(next[static_cast<size_t>(st)]);
      return r;
    }
  r.completed = true;
  r.makespan = *std::max_element(clock.begin(), clock.end());
  r.bubble = r.makespan > 0 ? 1.0 - busy / (static_cast<double>(p) * r.makespan) : 0.0;
  return r;
}

void run_pipeline_stage(const std::vector<PipeStep>& steps,
                        const std::function<void(int64_t)>& forward,
                        const std::function<void(int64_t)>& backward) {
  for (const PipeStep& a : steps) {
    BUPO_CHECK(a.chunk == 0, "pipeline: model chunks (interleaved schedules) are not supported");
    if (a.action == PipeAction::Forward)
      forward(a.micro);
    else
      backward(a.micro);
  }
}

}  // namespace bupo
