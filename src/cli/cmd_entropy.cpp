#include <unistd.h>
#include <cstdio>

#include "cli/commands.hpp"
#include "lens/entropy_analysis.hpp"
#include "model/gguf_import.hpp"

namespace bupo::cli {

Runner add_entropy(CLI::App& app) {
  struct Opts {
    std::string model, data, out, lens = "raw";
    int64_t batch_tokens = 4096, chunk = 0;
    bool overwrite = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand("entropy",
                                 "Per-token internal-policy entropies (papers.md §1.2-1.3) of "
                                 "every layer and module into HDF5.\n"
                                 "Input rows: {\"ids\": [...], \"response_start\": s}; one output "
                                 "row per response token t >= s,\n"
                                 "read at position t-1.");
  sub->add_option("--model", o->model, "Hugging Face model directory (config.json + *.safetensors) or a .gguf file")
      ->required();
  sub->add_option("--data", o->data, "JSONL file of token rows")->required();
  sub->add_option("--out", o->out, "output HDF5 file")->required();
  sub->add_option("--lens", o->lens,
                  "raw: softmax(h E_u^T) as in the paper; normed: final norm first")
      ->check(CLI::IsMember({"raw", "normed"}));
  sub->add_option("--batch-tokens", o->batch_tokens,
                  "pack records into forward batches of at most this many tokens")
      ->check(CLI::PositiveNumber);
  sub->add_option("--lens-chunk", o->chunk, "rows per lens chunk (0: automatic)")
      ->check(CLI::NonNegativeNumber);
  sub->add_flag("--overwrite", o->overwrite, "replace an existing output file");
  return [o]() {
    auto model = load_model(o->model, ParallelContext::single());
    EntropyOptions opt;
    opt.lens = lens_mode_from_string(o->lens);
    opt.max_batch_tokens = o->batch_tokens;
    opt.lens_chunk_rows = o->chunk;
    const bool tty = isatty(fileno(stderr));
    run_entropy(*model, o->model, o->data, o->out, o->overwrite, opt,
                [tty](int64_t done, int64_t total) {
                  if (tty)
                    std::fprintf(stderr, "\rbupo entropy: %lld/%lld records", (long long)done,
                                 (long long)total);
                  else if (done == total)
                    std::fprintf(stderr, "bupo entropy: %lld/%lld records\n", (long long)done,
                                 (long long)total);
                  if (tty && done == total) std::fprintf(stderr, "\n");
                });
    std::printf("wrote %s (L=%lld, lens=%s)\n", o->out.c_str(), (long long)model->num_layers(),
                o->lens.c_str());
    return 0;
  };
}

}  // namespace bupo::cli
