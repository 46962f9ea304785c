#include "gen/generate.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

#include "backend/device_math.hpp"
#include "core/error.hpp"
#include "lens/lens.hpp"

namespace bupo {
namespace {

// The per-step buffers of sampling, for up to `S` sequences, carved once per generate() call.
struct SamplingBuffers {
  Tensor last;              // (S, d): the last row of each sequence after the final norm
  Tensor rows;              // (S) I32: which rows those are
  Tensor logits;            // (S, V)
  Tensor shard, gathered;   // (S, V/tp), (tp, S, V/tp) under tensor parallelism
  Tensor raw_entropy;       // (S)
  Tensor temperature;       // (S)
  Tensor uniform;           // (S) F64
  Tensor token;             // (S) I32
  Tensor logprob, entropy;  // (S)
  SamplingBuffers(Arena& a, DType t, int64_t S, int64_t d, int64_t V, int64_t tp) {
    last = a.alloc(t, {S, d});  // the compute dtype; logits and what follows are F32
    rows = a.alloc(DType::I32, {S});
    logits = a.alloc_f32({S, V});
    if (tp > 1) {
      shard = a.alloc_f32({S, V / tp});
      gathered = a.alloc_f32({tp * S * (V / tp)});
    }
    raw_entropy = a.alloc_f32({S});
    temperature = a.alloc_f32({S});
    uniform = a.alloc(DType::F64, {S});
    token = a.alloc(DType::I32, {S});
    logprob = a.alloc_f32({S});
    entropy = a.alloc_f32({S});
  }
};
}  // namespace

double sampling_uniform(uint64_t seed, int64_t prompt, int64_t sample, int64_t position) {
  return dmath::sampling_uniform(seed, prompt, sample, position);  // one definition, any device
}

std::vector<int32_t> default_stop_ids(const Tokenizer& tok) {
  std::vector<int32_t> ids;
  for (const char* t : {"<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>"})
    if (auto id = tok.token_id(t)) ids.push_back(*id);
  return ids;
}

std::vector<Generation> generate(Model& model, const std::vector<std::vector<int32_t>>& prompts,
                                 int64_t n_samples, const GenerateOptions& opt,
                                 const Tokenizer* tok) {
  BUPO_CHECK(n_samples >= 1, "generate: n must be >= 1");
  BUPO_CHECK(opt.stop_strings.empty() || tok != nullptr, "generate: stop strings need a tokenizer");
  Backend& be = model.backend();
  const int64_t V = model.config().vocab_size, d = model.hidden();
  const int64_t P = static_cast<int64_t>(prompts.size()), slots = P * n_samples;
  int64_t max_prompt = 0;
  for (size_t i = 0; i < prompts.size(); ++i) {
    BUPO_CHECK(!prompts[i].empty(), "generate: prompt ", i, " is empty");
    for (int32_t id : prompts[i])
      BUPO_CHECK(id >= 0 && id < V, "generate: prompt ", i, " has token id ", id,
                 " outside the vocabulary");
    max_prompt = std::max<int64_t>(max_prompt, static_cast<int64_t>(prompts[i].size()));
  }
  const int64_t max_len =
      std::min<int64_t>(max_prompt + opt.max_new_tokens, model.config().max_position_embeddings);
  BUPO_CHECK(max_prompt < max_len, "generate: a prompt of ", max_prompt,
             " tokens leaves no room under max_position_embeddings = ",
             model.config().max_position_embeddings);
  BUPO_CHECK(opt.prompt_keys.empty() || static_cast<int64_t>(opt.prompt_keys.size()) == P,
             "generate: prompt_keys must have one entry per prompt");
  auto key = [&](int64_t prompt) {
    return opt.prompt_keys.empty() ? prompt : opt.prompt_keys[static_cast<size_t>(prompt)];
  };
  std::vector<Generation> out(static_cast<size_t>(slots));
  if (slots == 0) return out;
  KVCache cache = model.make_cache(slots, max_len);
  std::vector<int64_t> len(static_cast<size_t>(slots));
  std::vector<std::unique_ptr<StreamDecoder>> dec;
  for (int64_t s = 0; s < slots; ++s) {
    out[static_cast<size_t>(s)].prompt = s / n_samples;
    out[static_cast<size_t>(s)].sample = s % n_samples;
    len[static_cast<size_t>(s)] =
        static_cast<int64_t>(prompts[static_cast<size_t>(s / n_samples)].size());
    if (tok) dec.push_back(std::make_unique<StreamDecoder>(*tok));
  }
  const Lens head{&model.unembedding(), nullptr, LensMode::Raw};
  Activations acts;
  const ParallelContext& pc = model.parallel();
  const int64_t tp = pc.tp_size(), Vl = V / tp;
  Arena plan = Arena::measuring();
  SamplingBuffers(plan, be.compute_dtype(), slots, d, V, tp);
  ArenaLease mem = be.activations().lease(plan.high_water());
  const SamplingBuffers buf(*mem, be.compute_dtype(), slots, d, V, tp);
  // host side of one step, sized for every slot once
  constexpr int64_t kF = 5;  // token, log-prob, entropy, temperature, raw entropy
  std::vector<float> res(static_cast<size_t>(slots * kF)), raw_h(static_cast<size_t>(slots)),
      temp_h(static_cast<size_t>(slots)), lp_h(static_cast<size_t>(slots)),
      ent_h(static_cast<size_t>(slots));
  std::vector<double> uni_h(static_cast<size_t>(slots));
  std::vector<int32_t> rows_h(static_cast<size_t>(slots)), tok_h(static_cast<size_t>(slots));

  // Sample the next token of every listed slot from the last row of each of its sequences. Under
  // pipeline parallelism the last stage samples and broadcasts (token, log-prob, entropy,
  // temperature, raw entropy) to the other stages; under tensor parallelism the last rows'
  // vocabulary shards are gathered for sampling (top-p needs the whole distribution).
  auto step = [&](const std::vector<int64_t>& ss, const Batch& b) {
    model.forward_cached(b, acts, cache, ss);
    const int64_t S = static_cast<int64_t>(ss.size());
    if (pc.last_stage()) {
      for (int64_t i = 0; i < S; ++i)
        rows_h[static_cast<size_t>(i)] =
            static_cast<int32_t>(b.cu_seqlens[static_cast<size_t>(i) + 1] - 1);
      const Tensor rows = buf.rows.rows(0, S), last = buf.last.rows(0, S);
      const Tensor logits = buf.logits.rows(0, S);
      be.upload(rows, rows_h.data());
      be.gather_rows(last, acts.final_out, rows);
      if (tp == 1) {
        head.logits(last, logits);
      } else {
        const Tensor shard = buf.shard.rows(0, S);
        head.logits(last, shard);
        pc.dev.tp->allgather(shard.f32(), buf.gathered.f32(), static_cast<size_t>(S * Vl));
        for (int64_t t = 0; t < tp; ++t)
          for (int64_t i = 0; i < S; ++i)
            be.copy(logits.flat(i * V + t * Vl, Vl), buf.gathered.flat((t * S + i) * Vl, Vl));
      }
      // a padded vocabulary's filler ids sit at the end: sample among the real ones only
      const int64_t Veff = opt.vocab_limit > 0 ? std::min(opt.vocab_limit, V) : V;
      be.row_entropy(buf.raw_entropy.rows(0, S), logits, Veff);
      be.download(raw_h.data(), buf.raw_entropy.rows(0, S));
      for (int64_t i = 0; i < S; ++i) {
        const int64_t s = ss[static_cast<size_t>(i)];
        const Generation& g = out[static_cast<size_t>(s)];
        const int64_t pos = len[static_cast<size_t>(s)];
        float temp = opt.temperature;
        if (opt.temperature_hook)
          temp =
              opt.temperature_hook({key(g.prompt), g.sample, pos, raw_h[static_cast<size_t>(i)]});
        temp_h[static_cast<size_t>(i)] = temp;
        uni_h[static_cast<size_t>(i)] = sampling_uniform(opt.seed, key(g.prompt), g.sample, pos);
      }
      be.upload(buf.temperature.rows(0, S), temp_h.data());
      be.upload(buf.uniform.rows(0, S), uni_h.data());
      be.sample(buf.token.rows(0, S), buf.logprob.rows(0, S), buf.entropy.rows(0, S), logits, Veff,
                buf.temperature.rows(0, S), buf.uniform.rows(0, S), opt.top_p, opt.top_k);
      be.download(tok_h.data(), buf.token.rows(0, S));
      be.download(lp_h.data(), buf.logprob.rows(0, S));
      be.download(ent_h.data(), buf.entropy.rows(0, S));
      for (int64_t i = 0; i < S; ++i) {
        float* r = res.data() + i * kF;
        const auto u = static_cast<size_t>(i);
        r[0] = static_cast<float>(tok_h[u]);  // exact: token ids are < 2^24
        r[1] = lp_h[u];
        r[2] = ent_h[u];
        r[3] = temp_h[u];
        r[4] = raw_h[u];
      }
    }
    if (pc.pp_size() > 1)
      pc.pp->broadcast(res.data(), static_cast<size_t>(S * kF) * sizeof(float), pc.pp_size() - 1);
    for (int64_t i = 0; i < S; ++i) {
      const int64_t s = ss[static_cast<size_t>(i)];
      Generation& g = out[static_cast<size_t>(s)];
      const float* r = res.data() + i * kF;
      const auto t = static_cast<int32_t>(r[0]);
      const int64_t pos = len[static_cast<size_t>(s)];
      g.ids.push_back(t);
      g.logprobs.push_back(r[1]);
      g.entropies.push_back(r[2]);
      g.temperatures.push_back(r[3]);
      g.raw_entropies.push_back(r[4]);
      len[static_cast<size_t>(s)] = pos + 1;
      if (tok) g.text += dec[static_cast<size_t>(s)]->push(t);
      if (std::find(opt.stop_ids.begin(), opt.stop_ids.end(), t) != opt.stop_ids.end())
        g.finish_reason = "eos";
      for (const auto& st : opt.stop_strings)
        if (g.finish_reason.empty() && g.text.find(st) != std::string::npos)
          g.finish_reason = "stop";
      if (g.finish_reason.empty() &&
          (static_cast<int64_t>(g.ids.size()) >= opt.max_new_tokens || pos + 1 >= max_len))
        g.finish_reason = "length";
    }
  };
  // prefill, packed up to max_batch_tokens
  for (int64_t s0 = 0; s0 < slots;) {
    std::vector<int64_t> ss;
    std::vector<std::vector<int32_t>> seqs;
    int64_t tokens = 0;
    for (int64_t s = s0; s < slots; ++s) {
      const auto& p = prompts[static_cast<size_t>(s / n_samples)];
      if (!ss.empty() && tokens + static_cast<int64_t>(p.size()) > opt.max_batch_tokens) break;
      ss.push_back(s);
      seqs.push_back(p);
      tokens += static_cast<int64_t>(p.size());
    }
    step(ss, Batch::from_sequences(seqs));
    s0 += static_cast<int64_t>(ss.size());
  }
  // decode
  for (;;) {
    std::vector<int64_t> ss;
    Batch b;
    b.cu_seqlens.push_back(0);
    for (int64_t s = 0; s < slots; ++s) {
      const Generation& g = out[static_cast<size_t>(s)];
      if (!g.finish_reason.empty()) continue;
      ss.push_back(s);
      b.ids.push_back(g.ids.back());
      b.pos.push_back(static_cast<int32_t>(len[static_cast<size_t>(s)] - 1));
      b.cu_seqlens.push_back(b.N());
    }
    if (ss.empty()) break;
    step(ss, b);
  }
  if (tok)
    for (int64_t s = 0; s < slots; ++s)
      out[static_cast<size_t>(s)].text += dec[static_cast<size_t>(s)]->flush();
  return out;
}

}  // namespace bupo
