// bupo_bench_cuda: the GPU figures of issue 12, each as a ratio to a bound measured in the same run
// on the same GPU — a large cuBLASLt bf16 GEMM for compute, a device-to-device copy for bandwidth:
//   train_mfu        training step (forward, lens loss, backward, AdamW) of a Qwen3-0.6B-shaped
//                    model at sequence length --seq: model FLOPs / time / GEMM rate   (>= 0.45)
//   decode_hbm       decode at batch --decode-batch: bytes a step must read (bf16 weights, the KV
//                    cache) / bandwidth, over the measured step time                 (>= 0.60)
//   lens_vs_gemm     the fused lens (entropy + target log-prob, never the full logits) over the
//                    time of the bare logit GEMM of the same shape                   (>= 0.70)
//   diagnostics      all-layer module entropies at the default subsample (256 tokens), a share
//                    of the training step                                            (<= 0.05)
//   bupo_phase1      a BuPO phase-1 step (layers <= l, the internal policy's loss) over the
//                    full step                                                       (<= 1)
// Prints one table (and --json FILE). Exit 77 without a GPU, 1 if a target is missed with
// --strict. Wall-clock timing around Backend::synchronize(); warm-up runs first.
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "backend/cuda/cuda_backend.hpp"
#include "gen/generate.hpp"
#include "io/json_util.hpp"
#include "lens/lens.hpp"
#include "model/model.hpp"
#include "optim/adamw.hpp"

using namespace bupo;

namespace {

double seconds(Backend& be, int reps, const std::function<void()>& f) {
  f();  // warm-up: algorithm search, first-touch allocations
  be.synchronize();
  const auto t0 = std::chrono::steady_clock::now();
  for (int i = 0; i < reps; ++i) f();
  be.synchronize();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() / reps;
}

// random N(0, 1) values in the backend's compute dtype (not constants: a GEMM on zeros runs faster)
Tensor random_compute(Backend& be, Dims d, uint64_t seed) {
  std::mt19937 rng(static_cast<uint32_t>(seed));
  std::normal_distribution<float> n(0.0f, 1.0f);
  std::vector<float> h(static_cast<size_t>(d.numel()));
  for (auto& x : h) x = n(rng);
  const Tensor f = be.scratch().alloc_f32(d);
  be.upload(f, h.data());
  if (be.compute_dtype() == DType::F32) return f;
  const Tensor b = be.scratch().alloc(be.compute_dtype(), d);
  be.convert(b, f);
  return b;
}

ModelConfig qwen3_0p6b() {  // Qwen/Qwen3-0.6B's shape
  return ModelConfig::qwen3_shape(151936, 1024, 3072, 28, 16, 8, 128, 40960, true);
}

struct Row {
  std::string name, unit;
  double measured, bound, ratio, target;
  bool at_least;
  bool ok() const { return at_least ? ratio >= target : ratio <= target; }
};

}  // namespace

int main(int argc, char** argv) {
  int64_t seq = 2048, batch = 4, decode_batch = 64, prompt = 512, decode_steps = 32;
  std::string json_path, device = "cuda";
  bool strict = false, tiny = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "bupo_bench_cuda: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--seq")
      seq = std::stoll(next());
    else if (a == "--batch")
      batch = std::stoll(next());
    else if (a == "--decode-batch")
      decode_batch = std::stoll(next());
    else if (a == "--json")
      json_path = next();
    else if (a == "--strict")
      strict = true;
    else if (a == "--device")
      device = next();
    else if (a == "--tiny")
      tiny = true;
    else {
      std::fprintf(stderr,
                   "usage: bupo_bench_cuda [--seq N] [--batch N] [--decode-batch N] [--json FILE] "
                   "[--strict] [--device cpu|cuda] [--tiny]\n");
      return 2;
    }
  }
  if (tiny) {  // the harness itself, on any backend (--device cpu: a machine without a GPU)
    seq = 64;
    batch = 2;
    decode_batch = 4;
    prompt = 16;
    decode_steps = 4;
  }
  bupo_register_cuda_backend();
  if (device.rfind("cuda", 0) == 0) {
    if (cuda::device_count() == 0) {
      std::printf("bupo_bench_cuda: no CUDA device visible\n");
      return 77;
    }
    std::printf("%s\n", cuda::library_versions().c_str());
  }
  Backend& be = backend_for(device, "--device", device == "cpu" ? "auto" : "bf16");
  const DType cdt = be.compute_dtype();
  std::printf("backend %s, compute %s%s\n", be.name().c_str(), dtype_name(cdt),
              tiny ? " (--tiny: harness check, not a measurement)" : "");
  std::vector<Row> rows;

  // ---- bounds: bf16 GEMM rate, device-to-device bandwidth
  double peak = 0, bw = 0;
  {
    ArenaScope s(be.scratch());
    const int64_t n = tiny ? 256 : 8192;
    const Tensor A = random_compute(be, {n, n}, 1), B = random_compute(be, {n, n}, 2),
                 C = be.scratch().alloc(cdt, {n, n});
    const double t =
        seconds(be, 10, [&] { be.gemm(false, true, n, n, n, 1.0f, A, n, B, n, 0.0f, C, n); });
    peak = 2.0 * n * n * n / t;
    const int64_t bytes = int64_t{1} << (tiny ? 24 : 30);
    const Tensor x = be.scratch().alloc(DType::F32, {bytes / 4}),
                 y = be.scratch().alloc(DType::F32, {bytes / 4});
    be.fill(x, 1.0f);
    const double tc = seconds(be, 10, [&] { be.copy(y, x); });
    bw = 2.0 * static_cast<double>(bytes) / tc;  // read + write
  }
  std::printf("bounds: %s GEMM %.1f TFLOP/s; device copy %.0f GB/s (read + write)\n",
              dtype_name(cdt), peak / 1e12, bw / 1e9);

  // ---- the model: a training step, a BuPO phase-1 step, diagnostics
  ModelConfig cfg = qwen3_0p6b();
  if (tiny) {
    cfg.vocab_size = 512;
    cfg.hidden_size = 64;
    cfg.intermediate_size = 128;
    cfg.num_layers = 4;
    cfg.num_heads = 4;
    cfg.num_kv_heads = 2;
    cfg.head_dim = 16;
  }
  Model m(cfg, ParallelContext::single().with_device_comms(be, 120.0), be);
  m.init_random(1, 0.02f);
  m.params().allocate_grads();
  AdamW opt(m.params(), AdamWConfig{1e-5, 0.9, 0.999, 1e-8, 0.01});
  std::mt19937 rng(5);
  std::uniform_int_distribution<int32_t> tok(0, static_cast<int32_t>(cfg.vocab_size - 1));
  std::vector<std::vector<int32_t>> seqs(static_cast<size_t>(batch),
                                         std::vector<int32_t>(static_cast<size_t>(seq)));
  for (auto& s : seqs)
    for (auto& t : s) t = tok(rng);
  const Batch b = Batch::from_sequences(seqs);
  const int64_t N = b.N(), d = cfg.hidden_size, L = cfg.num_layers;
  std::vector<int32_t> tgt(static_cast<size_t>(N));
  std::vector<float> g(static_cast<size_t>(N), -1.0f / static_cast<float>(N)),
      lp(static_cast<size_t>(N));
  for (int64_t n = 0; n < N; ++n) tgt[n] = b.ids[(n + 1) % N];
  const Lens out{&m.unembedding(), nullptr, LensMode::Raw};
  auto train_step = [&](int upto) {
    m.params().zero_grad();
    Activations acts;
    m.forward(b, acts, true, upto);
    ArenaScope s(be.scratch());
    const Tensor dY = be.scratch().alloc(be.compute_dtype(), {N, d});
    be.fill(dY, 0.0f);
    if (upto < 0) {
      out.forward(acts.final_out, tgt.data(), nullptr, lp.data());
      out.backward(acts.final_out, tgt.data(), g.data(), nullptr, dY);
      m.backward_from_output(b, acts, dY);
    } else {  // BuPO phase 1: π^l = softmax(H^l E_uᵀ), only layers <= l receive gradient
      out.forward(acts.h(upto), tgt.data(), nullptr, lp.data());
      out.backward(acts.h(upto), tgt.data(), g.data(), nullptr, dY);
      m.backward_from_layer(b, acts, upto, dY);
    }
    clip_grad_norm(m.params(), 1.0);
    opt.step();
  };
  const double t_step = seconds(be, 1, [&] { train_step(-1); });
  const int l = static_cast<int>(L / 4);
  const double t_p1 = seconds(be, 1, [&] { train_step(l); });
  const double HD = static_cast<double>(cfg.num_heads * cfg.head_dim),
               KD = static_cast<double>(cfg.num_kv_heads * cfg.head_dim);
  const double p_matmul =
      static_cast<double>(L) * (d * HD * 2 + 2 * d * KD + 3.0 * d * cfg.intermediate_size) +
      static_cast<double>(cfg.vocab_size) * d;
  const double flops = 6.0 * p_matmul * N + 6.0 * L * HD * static_cast<double>(seq) * N;  // causal
  rows.push_back({"train_mfu", "TFLOP/s", flops / t_step / 1e12, peak / 1e12, flops / t_step / peak,
                  0.45, true});
  rows.push_back({"bupo_phase1", "s", t_p1, t_step, t_p1 / t_step, 1.0, false});

  {  // diagnostics: a forward with taps over sequences holding 256 sampled tokens, 5 modules/layer
    std::vector<std::vector<int32_t>> ds(2, std::vector<int32_t>(512));
    for (auto& s : ds)
      for (auto& t : s) t = tok(rng);
    const Batch db = Batch::from_sequences(ds);
    const int64_t sub = 256;
    std::vector<float> ent(static_cast<size_t>(sub));
    const Lens raw{&m.unembedding(), nullptr, LensMode::Raw};
    const double t_diag = seconds(be, 2, [&] {
      Activations acts;
      const TapFn tap = [&](const LayerTaps& t) {
        for (const Tensor* x : {&t.h_out, &t.attn_in, &t.attn_out, &t.ffn_in, &t.ffn_out}) {
          if (x->empty()) continue;
          raw.forward(x->rows(0, sub), nullptr, ent.data(), nullptr);
        }
      };
      m.forward(db, acts, false, -1, &tap);
    });
    rows.push_back({"diagnostics", "s", t_diag, t_step, t_diag / t_step, 0.05, false});
  }

  {  // the lens against its GEMM: 8192 rows, the whole vocabulary
    ArenaScope s(be.scratch());
    const int64_t n = tiny ? 256 : 8192, V = cfg.vocab_size;
    const Tensor x = random_compute(be, {n, d}, 3), z = be.scratch().alloc(cdt, {n, V});
    const Tensor E = m.unembedding().compute_weight();
    std::vector<int32_t> tg(static_cast<size_t>(n));
    for (auto& t : tg) t = tok(rng);
    std::vector<float> e(static_cast<size_t>(n)), p(static_cast<size_t>(n));
    const double t_gemm =
        seconds(be, 5, [&] { be.gemm(false, true, n, V, d, 1.0f, x, d, E, d, 0.0f, z, V); });
    const double t_lens = seconds(be, 5, [&] { out.forward(x, tg.data(), e.data(), p.data()); });
    rows.push_back({"lens_vs_gemm", "TFLOP/s", 2.0 * n * V * d / t_lens / 1e12,
                    2.0 * n * V * d / t_gemm / 1e12, t_gemm / t_lens, 0.70, true});
  }

  {  // decode at batch 64: the time of decode steps = generate(prompt, k+1) − generate(prompt, 1)
    std::vector<std::vector<int32_t>> ps(static_cast<size_t>(decode_batch),
                                         std::vector<int32_t>(static_cast<size_t>(prompt)));
    for (auto& s : ps)
      for (auto& t : s) t = tok(rng);
    GenerateOptions o;
    o.temperature = 0.0f;
    o.seed = 1;
    auto gen_seconds = [&](int64_t new_tokens) {
      o.max_new_tokens = new_tokens;
      return seconds(be, 1, [&] { generate(m, ps, 1, o); });
    };
    const double t1 = gen_seconds(1), tk = gen_seconds(decode_steps + 1);
    const double per_step = (tk - t1) / static_cast<double>(decode_steps);
    const double weight_bytes =
        static_cast<double>(dtype_size(cdt)) * static_cast<double>(m.params().total_elements());
    const double ctx = static_cast<double>(prompt) + decode_steps / 2.0;
    const double kv_bytes =
        static_cast<double>(dtype_size(cdt)) * decode_batch * ctx * L * 2 * KD;  // K, V
    const double roofline = (weight_bytes + kv_bytes) / bw;
    rows.push_back(
        {"decode_hbm", "ms/step", per_step * 1e3, roofline * 1e3, roofline / per_step, 0.60, true});
  }

  std::printf("\n%-14s %18s %18s %8s %8s  %s\n", "figure", "measured", "bound", "ratio", "target",
              "");
  bool all_ok = true;
  json j = json::object();
  for (const Row& r : rows) {
    std::printf("%-14s %10.3f %-7s %10.3f %-7s %8.3f %s%-6.2f  %s\n", r.name.c_str(), r.measured,
                r.unit.c_str(), r.bound, r.unit.c_str(), r.ratio,
                r.at_least ? ">=" : "<=", r.target, r.ok() ? "ok" : "MISSED");
    all_ok = all_ok && r.ok();
    j[r.name] = {{"measured", r.measured}, {"bound", r.bound},   {"unit", r.unit},
                 {"ratio", r.ratio},       {"target", r.target}, {"ok", r.ok()}};
  }
  j["gemm_tflops"] = peak / 1e12;
  j["copy_gbs"] = bw / 1e9;
  j["seq"] = seq;
  j["batch"] = batch;
  j["decode_batch"] = decode_batch;
  if (!json_path.empty()) std::ofstream(json_path) << j.dump(2) << "\n";
  return strict && !all_ok ? 1 : 0;
}
