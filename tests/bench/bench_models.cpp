// Benchmarks of the real-model path, compared with Hugging Face on the same machine by
// tests/bench/bench_reference.py (docs/smollm2.md has the ratios):
//   BM_TokenizeQwen3    Qwen3 tokenizer.json over the MATH500 problems (bytes/s, tokens/s)
//   BM_SmolLM2Prefill   one forward over the first greedy-reference prompt (tokens/s)
//   BM_SmolLM2Decode    64 greedy tokens after that prompt with the KV cache (tokens/s)
//   BM_SmolLM2TrainStep forward + backward of −mean log π(x_{t+1}) over 8 × 256 tokens, every
//                       parameter receiving gradient (the update's work); tests/bench/
//                       train_step_vs_pytorch.py runs PyTorch on the same ids and prints ratios
// Inputs: ../shared (tokenizer, MATH500) and models/smollm2 (env/setup.sh); skipped when absent.
#include <benchmark/benchmark.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "core/threads.hpp"
#include "gen/generate.hpp"
#include "io/json_util.hpp"
#include "lens/lens.hpp"
#include "model/gguf_import.hpp"
#include "tokenizer/chat_template.hpp"

namespace {
using namespace bupo;
const std::string kShared = BUPO_SHARED_DIR;
const std::string kGguf = std::string(BUPO_MODELS_DIR) + "/smollm2/SmolLM2-135M-Instruct.Q4_1.gguf";

std::vector<std::string> math500_problems() {
  std::vector<std::string> out;
  std::ifstream in(kShared + "/data/math/math500.jsonl");
  std::string line;
  while (std::getline(in, line))
    out.push_back(json::parse(line)["prompt"].back()["content"].get<std::string>());
  return out;
}

void BM_TokenizeQwen3(benchmark::State& st) {
  const std::string path = kShared + "/tokenizers/qwen3/tokenizer.json";
  if (!std::filesystem::exists(path)) return st.SkipWithError("shared/ not found");
  static const Tokenizer tok = Tokenizer::from_file(path);
  static const auto texts = math500_problems();
  int64_t bytes = 0, tokens = 0;
  for (auto _ : st)
    for (const auto& t : texts) {
      const auto ids = tok.encode(t);
      bytes += static_cast<int64_t>(t.size());
      tokens += static_cast<int64_t>(ids.size());
    }
  st.SetBytesProcessed(bytes);
  st.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(tokens), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_TokenizeQwen3)->Unit(benchmark::kMillisecond)->UseRealTime();

struct Smol {
  std::unique_ptr<Model> model;
  std::optional<Tokenizer> tok;
  std::vector<int32_t> prompt;
};
Smol* smol() {
  static Smol* s = [] {
    auto* x = new Smol;
    if (!std::filesystem::exists(kGguf)) return x;
    x->model = load_model(kGguf, ParallelContext::single());
    x->tok.emplace(load_tokenizer(kGguf));
    const json ref = read_json_file(std::string(BUPO_GOLDEN_DIR) + "/smollm2_reference.json");
    x->prompt = ref["greedy"][0]["ids"].get<std::vector<int32_t>>();
    return x;
  }();
  return s;
}

void BM_SmolLM2Prefill(benchmark::State& st) {
  Smol* s = smol();
  if (!s->model) return st.SkipWithError("models/smollm2 not found: run env/setup.sh");
  const Batch b = Batch::from_sequences({s->prompt});
  Activations acts;
  for (auto _ : st) s->model->forward(b, acts, false);
  st.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(b.N() * st.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_SmolLM2Prefill)->Unit(benchmark::kMillisecond)->UseRealTime();

void BM_SmolLM2Decode(benchmark::State& st) {
  Smol* s = smol();
  if (!s->model) return st.SkipWithError("models/smollm2 not found: run env/setup.sh");
  GenerateOptions o;
  o.temperature = 0.0f;
  o.max_new_tokens = 64;
  Activations acts;
  const Batch b = Batch::from_sequences({s->prompt});
  int64_t generated = 0;
  using clock = std::chrono::steady_clock;
  for (auto _ : st) {  // iteration time = (prefill + 64 decode steps) − a separately timed prefill
    const auto t0 = clock::now();
    s->model->forward(b, acts, false);
    const auto t1 = clock::now();
    const auto g = generate(*s->model, {s->prompt}, 1, o);
    const auto t2 = clock::now();
    generated += static_cast<int64_t>(g[0].ids.size());
    st.SetIterationTime(std::chrono::duration<double>((t2 - t1) - (t1 - t0)).count());
  }
  st.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(generated), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_SmolLM2Decode)->Unit(benchmark::kMillisecond)->UseManualTime()->Iterations(3);

// The ids of sequence s, position t: the same formula as tests/bench/train_step_vs_pytorch.py.
int32_t train_id(int64_t s, int64_t t, int64_t vocab) {
  return static_cast<int32_t>((t * 7919 + s * 104729 + 17) % vocab);
}

void BM_SmolLM2TrainStep(benchmark::State& st) {
  Smol* s = smol();
  if (!s->model) return st.SkipWithError("models/smollm2 not found: run env/setup.sh");
  Model& m = *s->model;
  const int64_t S = 8, T = 256, V = m.config().vocab_size, d = m.hidden();
  std::vector<std::vector<int32_t>> seqs(S);
  for (int64_t q = 0; q < S; ++q)
    for (int64_t t = 0; t < T; ++t) seqs[q].push_back(train_id(q, t, V));
  const Batch b = Batch::from_sequences(seqs);
  const int64_t N = b.N();
  std::vector<int32_t> tgt(N, 0);
  std::vector<float> g(N, 0.0f), lp(N), dY(N * d);
  const float w = -1.0f / static_cast<float>(S * (T - 1));  // d(−mean log p)/d log p
  for (int64_t q = 0; q < S; ++q)
    for (int64_t t = 0; t + 1 < T; ++t) {
      tgt[q * T + t] = seqs[q][t + 1];
      g[q * T + t] = w;
    }
  m.params().allocate_grads();
  const Lens lens{&m.unembedding(), nullptr, LensMode::Raw};
  Activations acts;
  using clock = std::chrono::steady_clock;
  double lens_s = 0.0, loss = 0.0;
  for (auto _ : st) {
    m.params().zero_grad();
    std::fill(dY.begin(), dY.end(), 0.0f);
    m.forward(b, acts, true);
    const auto t0 = clock::now();
    lens.forward(acts.final_out, tgt.data(), nullptr, lp.data());
    const Tensor dYt = Tensor::host(dY.data(), {N, d});
    lens.backward(acts.final_out, tgt.data(), g.data(), nullptr, dYt);
    lens_s += std::chrono::duration<double>(clock::now() - t0).count();
    m.backward_from_output(b, acts, dYt);
    loss = 0.0;
    for (int64_t n = 0; n < N; ++n) loss += static_cast<double>(g[n]) * lp[n];
  }
  st.counters["loss"] = loss;
  st.counters["lens_s"] = lens_s / static_cast<double>(st.iterations());
  st.counters["tokens/s"] =
      benchmark::Counter(static_cast<double>(N * st.iterations()), benchmark::Counter::kIsRate);
}
BENCHMARK(BM_SmolLM2TrainStep)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(3);

}  // namespace

int main(int argc, char** argv) {
  bupo::set_num_threads(0);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
