#include <cstdio>
#include <filesystem>
#include <fstream>

#include "cli/commands.hpp"
#include "core/error.hpp"
#include "io/atomic_file.hpp"
#include "model/gguf_import.hpp"

namespace bupo::cli {

Runner add_convert(CLI::App& app) {
  struct Opts {
    std::string gguf, out, dtype = "f32";
    bool overwrite = false;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "convert",
      "Convert a llama-architecture GGUF file into a Hugging Face model directory "
      "(config.json, model.safetensors, tokenizer.json, tokenizer_config.json).");
  sub->add_option("--gguf", o->gguf, "input .gguf file")->required()->check(CLI::ExistingFile);
  sub->add_option("--out", o->out, "output directory")->required();
  sub->add_option("--dtype", o->dtype, "storage dtype of the dequantised weights: f32 | bf16 | f16")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  sub->add_flag("--overwrite", o->overwrite, "replace the files of an existing --out folder");
  return [o]() {
    require_new_folder(o->out, o->overwrite);
    auto f = GgufFile::open(o->gguf);
    Model m(config_from_gguf(*f), ParallelContext::single());
    load_gguf_weights(m, *f);
    const json tok = tokenizer_json_from_gguf(*f), tok_cfg = tokenizer_config_from_gguf(*f);
    const DType dt = o->dtype == "bf16" ? DType::BF16 : o->dtype == "f16" ? DType::F16 : DType::F32;
    m.save(o->out, dt);
    for (const auto& [name, j] : {std::pair<const char*, const json*>{"tokenizer.json", &tok},
                                  {"tokenizer_config.json", &tok_cfg}}) {
      write_file_atomic((std::filesystem::path(o->out) / name).string(), j->dump(1) + "\n");
    }
    std::printf("wrote %s (%s, L=%lld, d=%lld, V=%lld) from %s\n", o->out.c_str(),
                arch_name(m.config().arch), (long long)m.config().num_layers,
                (long long)m.config().hidden_size, (long long)m.config().vocab_size,
                o->gguf.c_str());
    return 0;
  };
}

}  // namespace bupo::cli
