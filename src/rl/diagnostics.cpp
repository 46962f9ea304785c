#include "rl/diagnostics.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <limits>

#include "bupo/version.hpp"
#include "lens/entropy_analysis.hpp"
#include "rl/run.hpp"

namespace bupo::rl {

EntropySummary entropy_summary(Run& r, const std::vector<Rollout>& rolls) {
  // a deterministic subsample: rollouts at a fixed stride until enough response tokens
  const TrainConfig& cfg = r.cfg;
  Model& model = *r.model;
  std::vector<TokenRecord> recs;
  int64_t tokens = 0, total = 0;
  for (const auto& x : rolls) total += x.resp_len();
  const double mean_len =
      std::max(1.0, static_cast<double>(total) / static_cast<double>(rolls.size()));
  const auto wanted =
      static_cast<int64_t>(std::ceil(static_cast<double>(cfg.diagnostics.tokens) / mean_len));
  const size_t stride = static_cast<size_t>(
      std::max<int64_t>(1, static_cast<int64_t>(rolls.size()) / std::max<int64_t>(1, wanted)));
  for (size_t i = 0; i < rolls.size() && tokens < cfg.diagnostics.tokens; i += stride) {
    if (rolls[i].resp_len() == 0) continue;
    recs.push_back({rolls[i].ids, rolls[i].prompt_len, 0});
    tokens += rolls[i].resp_len();
  }
  const int64_t L = model.num_layers();
  const float nan = std::numeric_limits<float>::quiet_NaN();
  if (recs.empty()) {
    const std::vector<float> layers(static_cast<size_t>(L), nan);
    EntropySummary e;  // the Fig. 5/12 vectors stay empty: written as NaN
    e.layer.assign(static_cast<size_t>(L + 1), nan);
    e.attn_in = e.attn_out = e.ffn_in = e.ffn_out = layers;
    e.output = e.bupo_layer = e.ppl_output = nan;
    return e;
  }
  EntropyOptions eo;
  eo.lens = lens_mode_from_string(cfg.diagnostics.lens);
  eo.geometry = cfg.diagnostics.geometry;
  const EntropyRows rows = compute_entropy_rows(model, recs, 0, eo);
  EntropySummary e;
  e.tokens = rows.rows;
  for (const auto& rec : recs) e.forward_tokens += static_cast<int64_t>(rec.ids.size());
  auto colmean = [&](const std::vector<float>& v, int64_t cols) {
    std::vector<double> acc(static_cast<size_t>(cols), 0.0);
    for (int64_t i = 0; i < rows.rows; ++i)
      for (int64_t c = 0; c < cols; ++c)
        acc[static_cast<size_t>(c)] += v[static_cast<size_t>(i * cols + c)];
    std::vector<float> out(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c)
      out[static_cast<size_t>(c)] = static_cast<float>(
          acc[static_cast<size_t>(c)] / std::max<double>(1, static_cast<double>(rows.rows)));
    return out;
  };
  // exp(−mean log p) of each response (its rows are consecutive, one record each), averaged
  // over the responses
  auto perplexity = [&](const std::vector<float>& lp, int64_t cols) {
    std::vector<double> acc(static_cast<size_t>(cols), 0.0), resp(static_cast<size_t>(cols));
    int64_t responses = 0;
    for (int64_t i = 0; i < rows.rows;) {
      int64_t j = i;
      std::fill(resp.begin(), resp.end(), 0.0);
      for (; j < rows.rows &&
             rows.record[static_cast<size_t>(j)] == rows.record[static_cast<size_t>(i)];
           ++j)
        for (int64_t c = 0; c < cols; ++c)
          resp[static_cast<size_t>(c)] += lp[static_cast<size_t>(j * cols + c)];
      for (int64_t c = 0; c < cols; ++c)
        acc[static_cast<size_t>(c)] +=
            std::exp(-resp[static_cast<size_t>(c)] / static_cast<double>(j - i));
      ++responses;
      i = j;
    }
    std::vector<float> out(static_cast<size_t>(cols));
    for (int64_t c = 0; c < cols; ++c)
      out[static_cast<size_t>(c)] =
          static_cast<float>(acc[static_cast<size_t>(c)] / static_cast<double>(responses));
    return out;
  };
  e.layer = colmean(rows.layer, L + 1);
  e.attn_in = colmean(rows.attn_in, L);
  e.attn_out = colmean(rows.attn_out, L);
  e.ffn_in = colmean(rows.ffn_in, L);
  e.ffn_out = colmean(rows.ffn_out, L);
  e.output = colmean(rows.output, 1)[0];
  e.bupo_layer = r.st.bupo_layer > 0 ? e.layer[static_cast<size_t>(r.st.bupo_layer)] : nan;
  e.ppl_layer = perplexity(rows.lp_layer, L + 1);
  e.ppl_output = perplexity(rows.lp_output, 1)[0];
  if (eo.geometry) {
    e.cos_top = colmean(rows.cos_top, L + 1);
    e.kl_layer = colmean(rows.kl_layer, L + 1);
    e.cos_attn = colmean(rows.cos_attn, L);
    e.cos_ffn = colmean(rows.cos_ffn, L);
  }
  return e;
}

LayerChoice choose_bupo_layer(Model& model, const std::vector<Rollout>& rollouts,
                              const std::string& rule, double threshold) {
  std::vector<TokenRecord> recs;
  for (const auto& x : rollouts)
    if (x.resp_len() > 0) recs.push_back({x.ids, x.prompt_len, 0});
  BUPO_CHECK(!recs.empty(), "BuPO layer selection: the rollouts have no response tokens");
  EntropyOptions eo;
  eo.lens = LensMode::Raw;
  eo.geometry = false;  // the rule reads only the module entropies
  const EntropyRows rows = compute_entropy_rows(model, recs, 0, eo);
  const int64_t L = model.num_layers();
  LayerChoice c;
  c.tokens = rows.rows;
  c.ffn_dh.assign(static_cast<size_t>(L), 0.0f);
  c.attn_dh.assign(static_cast<size_t>(L), 0.0f);
  for (int64_t l = 0; l < L; ++l) {
    double f = 0, a = 0;
    for (int64_t i = 0; i < rows.rows; ++i) {
      const size_t k = static_cast<size_t>(i * L + l);
      f += rows.ffn_out[k] - rows.ffn_in[k];
      a += rows.attn_out[k] - rows.attn_in[k];
    }
    c.ffn_dh[static_cast<size_t>(l)] = static_cast<float>(f / static_cast<double>(rows.rows));
    c.attn_dh[static_cast<size_t>(l)] = static_cast<float>(a / static_cast<double>(rows.rows));
  }
  apply_layer_rule(c, rule, threshold);
  return c;
}

void apply_layer_rule(LayerChoice& c, const std::string& rule, double threshold) {
  // l = L is not a candidate: pi^L is the full policy (trainer.cpp, policy_of_step)
  const auto L = static_cast<int64_t>(c.ffn_dh.size());
  c.last_positive = c.first_run_end = 0;
  for (int64_t l = 0; l + 1 < L; ++l) {
    if (c.ffn_dh[static_cast<size_t>(l)] <= threshold) continue;
    c.last_positive = l + 1;
    // the first run starts here (none yet) or goes on (it ended at the layer below)
    if (c.first_run_end == 0 || c.first_run_end == l) c.first_run_end = l + 1;
  }
  c.rule = rule;
  c.threshold = threshold;
  c.chosen = rule == "end_of_first_positive_run" ? c.first_run_end : c.last_positive;
}

LayerChoice baseline_layer_choice(Run& r) {
  std::vector<Sampler::Draw> first;
  for (int64_t i = 0; i < std::min<int64_t>(r.cfg.trainer.prompts_per_step, r.train->size()); ++i)
    first.push_back({i, -1 - i});
  const auto rolls = sample_rollouts(r, first, 0, EntropyStats{});
  return choose_bupo_layer(*r.model, rolls, r.cfg.bupo.layer_rule, r.cfg.bupo.layer_threshold);
}

void pick_bupo_layer(Run& r) {
  const LayerChoice c = baseline_layer_choice(r);
  if (r.log) {
    r.log->write_layer_selection(c);
    r.log->flush();
  }
  std::string dh;
  for (size_t l = 0; l < c.ffn_dh.size(); ++l) {
    char b[48];
    std::snprintf(b, sizeof b, "%s%zu:%+.3f", l ? " " : "", l + 1, c.ffn_dh[l]);
    dh += b;
  }
  r.say("BuPO layer selection on " + std::to_string(c.tokens) + " baseline tokens: mean dH_FFN " +
        dh);
  if (!c.ffn_dh.empty() && c.ffn_dh.back() > 0)
    r.say("BuPO layer selection: layer " + std::to_string(c.ffn_dh.size()) +
          " (the top) also has mean dH_FFN > 0, but pi^L is the full policy, not a candidate");
  BUPO_CHECK(
      c.chosen > 0, r.cfg.source,
      ": bupo.auto_layer: no layer has a positive mean FFN entropy change below the top layer on "
      "the baseline "
      "rollouts (evidence in diagnostics.h5 /bupo_layer_selection); set bupo.internal_layer");
  r.st.bupo_layer = c.chosen;
  r.say("BuPO layer: pi^" + std::to_string(c.chosen) + " (bupo.layer_rule " + c.rule +
        "; last positive below the top: " + std::to_string(c.last_positive) +
        ", end of the first positive run: " + std::to_string(c.first_run_end) + ")");
}

LayerChoice pick_layer_command(const TrainConfig& cfg, const std::string& out_h5, bool overwrite) {
  Run r;
  r.cfg = cfg;
  r.opt.quiet = false;
  load_run(r);
  if (cfg.warmup.sft_steps > 0) warm_start(r);
  const LayerChoice c = baseline_layer_choice(r);
  if (!r.root()) return c;
  h5::AppendFile::create(out_h5, overwrite, [&](h5::File& f) {
    f.set_attr("/", "program_version", std::string(kVersion));
    f.set_attr("/", "config", cfg.to_toml());
    write_layer_evidence(f, "", c);
  });
  return c;
}

}  // namespace bupo::rl
