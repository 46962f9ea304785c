// Benchmarks of the real-model path, compared with Hugging Face on the same machine by
// tests/bench/bench_reference.py (docs/smollm2.md has the ratios):
//   BM_TokenizeQwen3    Qwen3 tokenizer.json over the MATH500 problems (bytes/s, tokens/s)
//   BM_SmolLM2Prefill   one forward over the first greedy-reference prompt (tokens/s)
//   BM_SmolLM2Decode    64 greedy tokens after that prompt with the KV cache (tokens/s)
// Inputs: ../shared (tokenizer, MATH500) and models/smollm2 (env/setup.sh); skipped when absent.
#include <benchmark/benchmark.h>

#include <chrono>
#include <filesystem>
#include <fstream>

#include "core/threads.hpp"
#include "gen/generate.hpp"
#include "io/json_util.hpp"
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

}  // namespace

int main(int argc, char** argv) {
  bupo::set_num_threads(0);
  benchmark::Initialize(&argc, argv);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
