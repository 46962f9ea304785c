#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>

#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "gen/text_rows.hpp"
#include "lens/entropy_analysis.hpp"
#include "model/gguf_import.hpp"
#include "parallel/mpi_comm.hpp"
#include "parallel/topology.hpp"

namespace bupo::cli {

// Options shared by `generate` and `entropy --generate`.
void add_sampling_options(CLI::App* sub, GenerateOptions& g) {
  sub->add_option("--temperature", g.temperature, "sampling temperature (0: greedy)")
      ->check(number_in(0.0, 100.0));
  sub->add_option("--top-p", g.top_p, "nucleus sampling mass (1: off)")->check(number_in(0.0, 1.0));
  sub->add_option("--top-k", g.top_k, "keep the k most likely tokens (0: off)")
      ->check(integer_in<int64_t>(0));
  sub->add_option("--max-tokens", g.max_new_tokens, "new tokens per response")
      ->check(integer_in<int64_t>(1, ModelLimits::max_positions));
  sub->add_option("--seed", g.seed,
                  "random seed; tokens are keyed by (seed, prompt, sample, position)")
      ->check(integer_in<uint64_t>(0));
  sub->add_option("--stop", g.stop_strings, "stop string (repeatable)")->check(kNonEmpty);
}

// A tokenizer for `model` unless `explicit_path` names one: .gguf models carry theirs, HF
// directories may hold a tokenizer.json. Returns false when none is found.
bool find_tokenizer(const std::string& model, const std::string& explicit_path,
                    std::optional<Tokenizer>& tok) {
  if (!explicit_path.empty()) {
    tok.emplace(load_tokenizer(explicit_path));
    return true;
  }
  if (is_gguf_path(model) ||
      std::filesystem::exists(std::filesystem::path(model) / "tokenizer.json")) {
    tok.emplace(load_tokenizer(model));
    return true;
  }
  return false;
}

Runner add_entropy(CLI::App& app) {
  struct Opts {
    std::string model, data, out, lens = "raw", tokenizer, device = "cpu", precision = "auto";
    int64_t batch_tokens = 4096, chunk = 0;
    int tp = 1, pp = 1;
    double timeout_s = 600;
    bool overwrite = false, no_geometry = false;
    TextRowOptions rows;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("entropy",
                                 "Per-token internal-policy entropies (papers.md §1.2-1.3) of "
                                 "every layer and module into HDF5.\n"
                                 "Rows: {\"ids\": [...], \"response_start\": s}, or text "
                                 "{\"prompt\": ..., \"response\": \"...\"}\n"
                                 "(prompt: a verl message list or a string), or {\"prompt\": ...} "
                                 "with --generate. One output row\n"
                                 "per response token t, read at position t-1.");
  sub->add_option("--model", o->model,
                  "Hugging Face model directory (config.json + *.safetensors) or a .gguf file")
      ->required();
  sub->add_option("--data", o->data, "JSONL file of rows")->required();
  sub->add_option("--out", o->out, "output HDF5 file")->required();
  sub->add_option("--lens", o->lens,
                  "raw: softmax(h E_u^T) as in the paper; normed: final norm first")
      ->check(CLI::IsMember({"raw", "normed"}));
  sub->add_option("--tokenizer", o->tokenizer, "tokenizer for text rows (default: the model's)");
  sub->add_option("--template", o->rows.tmpl,
                  "chat template for text prompts: auto, none, qwen3, qwen3-nothink, "
                  "chatml, smollm2, llama3, orz");
  sub->add_flag("--generate", o->rows.generate,
                "sample the response of rows that have only a prompt");
  sub->add_option("--limit", o->rows.limit, "use the first N rows")->check(integer_in<int64_t>(0));
  add_sampling_options(sub, o->rows.gen);
  sub->add_option("--batch-tokens", o->batch_tokens,
                  "pack records into forward batches of at most this many tokens")
      ->check(integer_in<int64_t>(1, int64_t{1} << 26));
  sub->add_option("--lens-chunk", o->chunk, "rows per lens chunk (0: automatic)")
      ->check(integer_in<int64_t>(0, int64_t{1} << 26));
  sub->add_flag("--overwrite", o->overwrite, "replace an existing output file");
  sub->add_flag("--no-geometry", o->no_geometry,
                "skip cos(H^l, H^L), KL(pi^l || pi_theta) and the residual cosines (Fig. 5/12): "
                "one forward pass fewer and no expectation GEMMs; their datasets hold NaN");
  sub->add_option("--tp", o->tp, "tensor-parallel ranks (under mpirun/srun)")
      ->check(integer_in(1, 65536));
  sub->add_option("--pp", o->pp,
                  "pipeline stages (under mpirun/srun); the rest of the ranks are "
                  "data-parallel replicas")
      ->check(integer_in(1, 65536));
  sub->add_option("--timeout", o->timeout_s,
                  "seconds a collective may take before the job ends, naming the rank")
      ->check(number_in(0.001, 1e7));
  sub->add_option("--device", o->device,
                  "backend: cpu, cuda or cuda:N (a build with CUDA and a visible GPU)");
  sub->add_option("--precision", o->precision, "compute dtype: auto, bf16 (cuda), fp32")
      ->check(CLI::IsMember({"auto", "bf16", "fp32"}));
  return [o]() {
    ParallelLayout lay;
    lay.tp = o->tp;
    lay.pp = o->pp;
    const int world = MpiSession::active() ? world_size() : 1;
    BUPO_CHECK(world % (lay.tp * lay.pp) == 0, "bupo entropy: --tp ", lay.tp, " × --pp ", lay.pp,
               " does not divide the job's ", world, " ranks");
    lay.dp = world / (lay.tp * lay.pp);
    const ModelConfig mc = model_config_of(o->model);
    validate_layout(lay, world, mc, "bupo entropy");
    set_comm_timeout(o->timeout_s);
    Backend& be = backend_for(o->device, "bupo entropy --device", o->precision);
    auto model =
        load_model(o->model,
                   make_parallel_context(lay, static_cast<int>(mc.num_layers), "bupo entropy")
                       .with_device_comms(be, o->timeout_s),
                   be);
    std::optional<Tokenizer> tok;
    find_tokenizer(o->model, o->tokenizer, tok);
    const auto recs = read_entropy_rows(o->data, *model, tok ? &*tok : nullptr, o->rows);
    EntropyOptions opt;
    opt.lens = lens_mode_from_string(o->lens);
    opt.max_batch_tokens = o->batch_tokens;
    opt.lens_chunk_rows = o->chunk;
    opt.geometry = !o->no_geometry;
    const bool tty = isatty(fileno(stderr));
    run_entropy(*model, recs, o->model, o->data, o->out, o->overwrite, opt,
                [tty](int64_t done, int64_t total) {
                  if (tty)
                    std::fprintf(stderr, "\rbupo entropy: %lld/%lld records", (long long)done,
                                 (long long)total);
                  else if (done == total)
                    std::fprintf(stderr, "bupo entropy: %lld/%lld records\n", (long long)done,
                                 (long long)total);
                  if (tty && done == total) std::fprintf(stderr, "\n");
                });
    if (model->parallel().world->rank() == 0)
      std::printf("wrote %s (L=%lld, lens=%s)\n", o->out.c_str(), (long long)model->num_layers(),
                  o->lens.c_str());
    return 0;
  };
}

}  // namespace bupo::cli
