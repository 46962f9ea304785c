#include "gen/generate.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>

#include "core/error.hpp"
#include "lens/lens.hpp"

namespace bupo {
namespace {
uint64_t mix(uint64_t z) {
  z += 0x9e3779b97f4a7c15ull;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}
}  // namespace

double sampling_uniform(uint64_t seed, int64_t prompt, int64_t sample, int64_t position) {
  uint64_t h = mix(seed);
  h = mix(h ^ static_cast<uint64_t>(prompt));
  h = mix(h ^ static_cast<uint64_t>(sample));
  h = mix(h ^ static_cast<uint64_t>(position));
  return static_cast<double>(h >> 11) * (1.0 / 9007199254740992.0);
}

float entropy_of_logits(const float* z, int64_t V) {
  const float m = *std::max_element(z, z + V);
  double S = 0.0, T = 0.0;
  for (int64_t j = 0; j < V; ++j) {
    const double w = static_cast<double>(z[j]) - m, e = std::exp(w);
    S += e;
    T += e * w;
  }
  return static_cast<float>(std::max(0.0, std::log(S) - T / S));
}

int32_t sample_token(const float* z, int64_t V, float temperature, float top_p, int64_t top_k,
                     double u, float* logprob, float* entropy) {
  if (temperature <= 0.0f) {  // greedy; report the T = 1 distribution
    const auto best = static_cast<int32_t>(std::max_element(z, z + V) - z);
    const float m = z[best];
    double S = 0.0, T = 0.0;
    for (int64_t j = 0; j < V; ++j) {
      const double w = static_cast<double>(z[j]) - m, e = std::exp(w);
      S += e;
      T += e * w;
    }
    *logprob = static_cast<float>(-std::log(S));
    *entropy = static_cast<float>(std::max(0.0, std::log(S) - T / S));
    return best;
  }
  // tempered log-softmax in double
  const double inv_t = 1.0 / temperature;
  const float m = *std::max_element(z, z + V);
  std::vector<double> p(static_cast<size_t>(V));
  double S = 0.0, T = 0.0;
  for (int64_t j = 0; j < V; ++j) {
    const double w = (static_cast<double>(z[j]) - m) * inv_t;
    p[static_cast<size_t>(j)] = std::exp(w);
    S += p[static_cast<size_t>(j)];
    T += p[static_cast<size_t>(j)] * w;
  }
  const double logS = std::log(S);
  *entropy = static_cast<float>(std::max(0.0, logS - T / S));
  int32_t tok = -1;
  if (top_k <= 0 && top_p >= 1.0f) {
    double target = u * S, c = 0.0;  // inverse CDF in token-id order
    for (int64_t j = 0; j < V; ++j) {
      c += p[static_cast<size_t>(j)];
      if (c > target) {
        tok = static_cast<int32_t>(j);
        break;
      }
    }
    if (tok < 0) tok = static_cast<int32_t>(V - 1);
  } else {
    std::vector<int32_t> idx(static_cast<size_t>(V));
    std::iota(idx.begin(), idx.end(), 0);
    auto by_p = [&](int32_t a, int32_t b) {
      return p[static_cast<size_t>(a)] > p[static_cast<size_t>(b)] ||
             (p[static_cast<size_t>(a)] == p[static_cast<size_t>(b)] && a < b);
    };
    size_t keep = idx.size();
    if (top_k > 0 && static_cast<size_t>(top_k) < idx.size()) {
      std::partial_sort(idx.begin(), idx.begin() + top_k, idx.end(), by_p);
      keep = static_cast<size_t>(top_k);
    } else {
      std::sort(idx.begin(), idx.end(), by_p);
    }
    if (top_p < 1.0f) {  // smallest prefix with mass >= top_p (at least one token)
      double c = 0.0;
      for (size_t i = 0; i < keep; ++i) {
        c += p[static_cast<size_t>(idx[i])] / S;
        if (c >= top_p) {
          keep = i + 1;
          break;
        }
      }
    }
    double mass = 0.0;
    for (size_t i = 0; i < keep; ++i) mass += p[static_cast<size_t>(idx[i])];
    double target = u * mass, c = 0.0;
    tok = idx[keep - 1];
    for (size_t i = 0; i < keep; ++i) {
      c += p[static_cast<size_t>(idx[i])];
      if (c > target) {
        tok = idx[i];
        break;
      }
    }
  }
  *logprob = static_cast<float>((static_cast<double>(z[tok]) - m) * inv_t - logS);
  return tok;
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
  KVCache cache = model.make_cache(slots, max_len);
  std::vector<Generation> out(static_cast<size_t>(slots));
  std::vector<int64_t> len(static_cast<size_t>(slots));
  std::vector<std::unique_ptr<StreamDecoder>> dec;
  for (int64_t s = 0; s < slots; ++s) {
    out[static_cast<size_t>(s)].prompt = s / n_samples;
    out[static_cast<size_t>(s)].sample = s % n_samples;
    len[static_cast<size_t>(s)] =
        static_cast<int64_t>(prompts[static_cast<size_t>(s / n_samples)].size());
    if (tok) dec.push_back(std::make_unique<StreamDecoder>(*tok));
  }
  Lens head{&model.unembedding(), nullptr, LensMode::Raw};
  std::vector<float> logits;
  Activations acts;

  // Sample the next token of every listed slot from the last row of each of its sequences. Under
  // pipeline parallelism the last stage samples and broadcasts (token, log-prob, entropy,
  // temperature, raw entropy) to the other stages; under tensor parallelism the last rows'
  // vocabulary shards are gathered for sampling (top-p needs the whole distribution).
  const ParallelContext& pc = model.parallel();
  const int64_t tp = pc.tp_size(), Vl = V / tp;
  std::vector<float> shard;
  auto step = [&](const std::vector<int64_t>& ss, const Batch& b) {
    model.forward_cached(b, acts, cache, ss);
    const int64_t S = static_cast<int64_t>(ss.size());
    constexpr int64_t kF = 5;
    std::vector<float> res(static_cast<size_t>(S * kF));
    if (pc.last_stage()) {
      std::vector<float> last(static_cast<size_t>(S * d));
      for (int64_t i = 0; i < S; ++i)
        std::copy_n(acts.final_out.ptr() + (b.cu_seqlens[static_cast<size_t>(i) + 1] - 1) * d, d,
                    last.data() + i * d);
      logits.resize(static_cast<size_t>(S * V));
      if (tp == 1) {
        head.logits(last.data(), S, logits.data());
      } else {
        shard.resize(static_cast<size_t>(S * Vl));
        std::vector<float> all(static_cast<size_t>(S * V));
        head.logits(last.data(), S, shard.data());
        pc.tp->allgather(shard.data(), all.data(), shard.size());
        for (int64_t t = 0; t < tp; ++t)
          for (int64_t i = 0; i < S; ++i)
            std::copy_n(all.data() + (t * S + i) * Vl, Vl, logits.data() + i * V + t * Vl);
      }
      // a padded vocabulary's filler ids sit at the end: sample among the real ones only
      const int64_t Veff = opt.vocab_limit > 0 ? std::min(opt.vocab_limit, V) : V;
      for (int64_t i = 0; i < S; ++i) {
        const int64_t s = ss[static_cast<size_t>(i)];
        const Generation& g = out[static_cast<size_t>(s)];
        const float* z = logits.data() + i * V;
        const int64_t pos = len[static_cast<size_t>(s)];
        float temp = opt.temperature;
        const float raw_entropy = entropy_of_logits(z, Veff);
        if (opt.temperature_hook)
          temp = opt.temperature_hook({key(g.prompt), g.sample, pos, raw_entropy});
        float lp = 0, ent = 0;
        const int32_t t =
            sample_token(z, Veff, temp, opt.top_p, opt.top_k,
                         sampling_uniform(opt.seed, key(g.prompt), g.sample, pos), &lp, &ent);
        float* r = res.data() + i * kF;
        r[0] = static_cast<float>(t);  // exact: token ids are < 2^24
        r[1] = lp;
        r[2] = ent;
        r[3] = temp;
        r[4] = raw_entropy;
      }
    }
    if (pc.pp_size() > 1) pc.pp->broadcast(res.data(), res.size() * sizeof(float), pc.pp_size() - 1);
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
