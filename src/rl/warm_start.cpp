// The supervised warm start of a fresh model on the built-in task (warmup.*): mean next-token NLL
// of the answers through the same pipeline and gradient path as the RL update, so that some
// answers are right and rewards carry signal before RL step 1.
#include <cstdio>

#include "rl/run.hpp"
#include "rl/update.hpp"

namespace bupo::rl {

void warm_start(Run& r) {
  const TrainConfig& cfg = r.cfg;
  const int32_t eos = r.stop_ids.back();  // <|endoftext|> for the built-in tokenizer
  AdamWConfig oc;
  oc.lr = cfg.warmup.sft_lr;
  oc.weight_decay = 0.0;
  const std::unique_ptr<AdamW> sft = make_optimizer(r, oc);
  Sampler s(r.train->size(), static_cast<uint64_t>(cfg.data.seed) ^ 0x5F7ull, true);
  double loss = 0;
  for (int64_t it = 1; it <= cfg.warmup.sft_steps; ++it) {
    if (r.stop_requested_everywhere())
      return r.stop_before_start("the warm start (step " + std::to_string(it) + ")");
    std::vector<Rollout> rs;
    for (const auto& dr : s.next(cfg.warmup.sft_batch)) {
      const Problem& p = r.train->at(dr.index);
      Rollout x;
      x.ids = p.prompt;
      x.prompt_len = static_cast<int64_t>(p.prompt.size());
      for (int32_t t : r.tok->encode(p.solution)) x.ids.push_back(t);
      x.ids.push_back(eos);
      rs.push_back(std::move(x));
    }
    // mean next-token NLL of the answers over the whole batch; each DP replica one share
    int64_t R_all = 0;
    for (const auto& x : rs) R_all += x.resp_len();
    MicroBatch ptrs;
    for (const auto& x : rs) ptrs.push_back(&x);
    const int64_t n = static_cast<int64_t>(ptrs.size()), R = r.pc.dp_size(), k = r.pc.dp_rank();
    const MiniBatch micro = {MicroBatch(ptrs.begin() + n * k / R, ptrs.begin() + n * (k + 1) / R)};
    std::vector<double> lsum = {0.0};
    std::vector<float> none;
    r.model->params().zero_grad();
    run_pipeline(r, micro, {0, LensMode::Raw}, false,
                 [&](size_t, const std::vector<float>& lp, const std::vector<float>&,
                     std::vector<float>& g_lp, std::vector<float>&) {
                   for (size_t t = 0; t < lp.size(); ++t) {
                     lsum[0] -= lp[t] / static_cast<double>(R_all);
                     g_lp[t] = -1.0f / static_cast<float>(R_all);
                   }
                 });
    reduce_loss_stats(r, lsum, none, {0, LensMode::Raw});
    loss = lsum[0];
    clip_grad_norm(r.model->params(), 1.0, finish_grads(r, *sft));
    sft->step();
    if (it % 25 == 0 || it == cfg.warmup.sft_steps)
      r.status("warm start " + std::to_string(it) + "/" + std::to_string(cfg.warmup.sft_steps) +
               "  loss " + std::to_string(loss));
  }
  r.model->params().zero_grad();
  char buf[160];
  std::snprintf(buf, sizeof buf,
                "warm start: %lld supervised steps on the built-in task, final loss %.4f",
                static_cast<long long>(cfg.warmup.sft_steps), loss);
  r.say(buf);
}

}  // namespace bupo::rl
