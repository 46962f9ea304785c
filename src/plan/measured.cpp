#include "plan/measured.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "core/error.hpp"

namespace fs = std::filesystem;

namespace bupo::plan {

MeasuredRun read_run(const std::string& dir) {
  MeasuredRun m;
  m.dir = dir;
  std::string ck;
  if (fs::is_directory(fs::path(dir) / "checkpoints"))
    for (const auto& e : fs::directory_iterator(fs::path(dir) / "checkpoints"))
      if (fs::exists(e.path() / "train_config.toml") && fs::exists(e.path() / "config.json") &&
          e.path().string() > ck)
        ck = e.path().string();
  BUPO_CHECK(!ck.empty(), dir, ": no checkpoint with train_config.toml and config.json (expected ",
             "a bupo train run folder)");
  m.cfg = rl::load_train_config(ck + "/train_config.toml", {});
  m.mc = ModelConfig::load(ck + "/config.json");
  m.lay = {static_cast<int>(m.cfg.parallel.tp), static_cast<int>(m.cfg.parallel.pp),
           static_cast<int>(m.cfg.parallel.dp), m.cfg.trainer.micro_batch_seqs,
           m.cfg.parallel.zero == 1};
  const std::string mf = dir + "/metrics.jsonl";
  std::ifstream in(mf);
  BUPO_CHECK(in.good(), mf, ": cannot read");
  std::string line;
  int64_t n = 0;
  while (std::getline(in, line)) {
    ++n;
    if (line.empty()) continue;
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const std::exception&) {
      fail(mf, ": line ", n, " is not JSON");
    }
    auto num = [&](const char* k) {
      BUPO_CHECK(j.contains(k) && j[k].is_number(), mf, ": line ", n, " has no number '", k,
                 "' (a run of an older bupo: the workload keys prompt_tokens, diag_tokens and "
                 "diag_forward_tokens came with bupo plan)");
      return j[k].get<double>();
    };
    auto count = [&](const char* k) {  // a token or sequence count: whole, 0 .. 2^50
      const double v = num(k);
      BUPO_CHECK(v >= 0 && v <= 1125899906842624.0 && v == std::floor(v), mf, ": line ", n, ": '",
                 k, "' = ", v, ": expected a whole count in [0, 2^50]");
      return static_cast<int64_t>(v);
    };
    MeasuredStep s;
    s.w.sequences = count("n_groups") * m.cfg.rollout.n;
    s.w.prompt_tokens = count("prompt_tokens");
    s.w.response_tokens = count("tokens");
    s.w.longest_response = count("response_length_max");
    s.w.diag_tokens = count("diag_tokens");
    s.w.diag_forward_tokens = count("diag_forward_tokens");
    const int64_t layer = num("phase") == 1 ? count("bupo_layer") : 0;
    BUPO_CHECK(layer <= m.mc.num_layers, mf, ": line ", n, ": 'bupo_layer' = ", layer,
               ": the model has ", m.mc.num_layers, " layers");
    s.w.policy_layer = static_cast<int>(layer);
    s.rollout = num("time_rollout");
    s.old_logprob = num("time_old_logprob");
    s.update = num("time_update");
    s.diagnostics = num("time_diagnostics");
    s.step = num("time_step");
    s.tp_bytes = num("comm_tp_bytes");
    s.pp_bytes = num("comm_pp_bytes");
    s.dp_bytes = num("comm_dp_bytes");
    m.steps.push_back(s);
  }
  BUPO_CHECK(!m.steps.empty(), mf, ": no steps");
  return m;
}

Comparison compare(const MeasuredRun& m, const Cluster& c) {
  Comparison k;
  k.name = m.lay.name();
  const size_t first = m.steps.size() > 1 ? 1 : 0;
  double n = 0;
  for (size_t i = 0; i < m.steps.size(); ++i) {
    const MeasuredStep& s = m.steps[i];
    const Prediction p = predict(m.mc, m.cfg, c, m.lay, s.w);
    const double pb[3] = {p.comm.tp.bytes, p.comm.pp.bytes, p.comm.dp.bytes};
    const double mb[3] = {s.tp_bytes, s.pp_bytes, s.dp_bytes};
    for (int g = 0; g < 3; ++g) {
      k.bytes_pred[g] += pb[g];
      k.bytes_meas[g] += mb[g];
      if (std::llround(pb[g]) != std::llround(mb[g])) k.bytes_exact = false;
    }
    if (i < first) continue;
    const double pv[5] = {p.time.rollout, p.time.old_logprob, p.time.update, p.time.diagnostics,
                          p.time.step()};
    const double mv[5] = {s.rollout, s.old_logprob, s.update, s.diagnostics,
                          s.rollout + s.old_logprob + s.update + s.diagnostics};
    for (int j = 0; j < 5; ++j) {
      k.pred[j] += pv[j];
      k.meas[j] += mv[j];
    }
    n += 1;
  }
  for (int j = 0; j < 5; ++j) {
    k.pred[j] /= n;
    k.meas[j] /= n;
  }
  return k;
}

void fit_stages(Cluster& c, const MeasuredRun& one, const MeasuredRun& two) {
  BUPO_CHECK(one.lay.ranks() == 1, one.dir,
             ": the first --against run of --calibrate must be a "
             "1-rank run (it is ",
             one.lay.name(), ")");
  BUPO_CHECK(two.lay.tp == 2 && two.lay.ranks() == 2, two.dir,
             ": the second --against run of "
             "--calibrate must be tp=2 on 2 ranks (it is ",
             two.lay.name(), ")");
  const size_t first = one.steps.size() > 1 ? 1 : 0;
  // measured means and the model's share of each stage at unit constants
  Cluster unit = c;
  for (StageCost* s : {&unit.prefill, &unit.decode, &unit.logprob, &unit.update, &unit.diagnostics})
    *s = {1.0, 0.0};
  double m1[4] = {0, 0, 0, 0}, m2[4] = {0, 0, 0, 0}, a1[4] = {0, 0, 0, 0}, comm2[4] = {0, 0, 0, 0},
         tok[4] = {0, 0, 0, 0};
  double n = 0;
  for (size_t i = first; i < std::min(one.steps.size(), two.steps.size()); ++i) {
    const auto& s1 = one.steps[i];
    const auto& s2 = two.steps[i];
    const Prediction p1 = predict(one.mc, one.cfg, unit, one.lay, s1.w);
    const Prediction p2 = predict(two.mc, two.cfg, unit, two.lay, s2.w);
    const double mv1[4] = {s1.rollout, s1.old_logprob, s1.update, s1.diagnostics};
    const double mv2[4] = {s2.rollout, s2.old_logprob, s2.update, s2.diagnostics};
    const double pv1[4] = {p1.time.rollout, p1.time.old_logprob, p1.time.update,
                           p1.time.diagnostics};
    const double cv2[4] = {p2.comm_time.rollout, p2.comm_time.old_logprob, p2.comm_time.update,
                           p2.comm_time.diagnostics};
    const double tk[4] = {static_cast<double>(s1.w.response_tokens),
                          static_cast<double>(s1.w.response_tokens),
                          static_cast<double>(s1.w.response_tokens * one.cfg.trainer.epochs),
                          static_cast<double>(s1.w.diag_tokens)};
    for (int j = 0; j < 4; ++j) {
      m1[j] += mv1[j];
      m2[j] += mv2[j];
      a1[j] += pv1[j];
      comm2[j] += cv2[j];
      tok[j] += tk[j];
    }
    n += 1;
  }
  BUPO_CHECK(n > 0, one.dir, ": no steps past the first to calibrate on");
  StageCost* out[4] = {&c.decode, &c.logprob, &c.update, &c.diagnostics};
  for (int j = 0; j < 4; ++j) {
    // A at efficiency 1 is a1 (FLOPs / rate); B = 2(t2 - comm) - t1, A = t1 - B
    const double B = std::clamp(2.0 * (m2[j] - comm2[j]) - m1[j], 0.0, 0.95 * m1[j]);
    const double A = m1[j] - B;
    out[j]->efficiency = std::clamp(a1[j] / std::max(A, 1e-12), 1e-4, 1.0);
    out[j]->s_per_token = tok[j] > 0 ? B / tok[j] : 0.0;
  }
  c.prefill = c.decode;  // the rollout is one measured stage: prefill and decode share it
}

}  // namespace bupo::plan
