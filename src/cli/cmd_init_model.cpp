#include <cstdio>
#include <filesystem>
#include <sstream>

#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "core/error.hpp"
#include "io/atomic_file.hpp"
#include "model/model.hpp"

namespace bupo::cli {

void require_new_folder(const std::string& dir, bool overwrite) {
  namespace fs = std::filesystem;
  std::error_code ec;
  if (!fs::exists(dir, ec)) return;
  BUPO_CHECK(fs::is_directory(dir, ec), dir, ": exists and is not a folder");
  BUPO_CHECK(overwrite || fs::is_empty(dir, ec), dir,
             ": the folder already holds files; pass --overwrite to replace them");
}

Runner add_init_model(CLI::App& app) {
  struct Opts {
    std::string out, arch = "qwen3", dtype = "f32", sample;
    bool overwrite = false;
    int64_t layers = 4, hidden = 64, heads = 4, kv_heads = 2, head_dim = 16, ffn = 192,
            vocab = 1024;
    int64_t records = 8, length = 48;
    uint64_t seed = 1;
    bool tied = true;
  };
  auto o = std::make_shared<Opts>();
  auto* sub = app.add_subcommand(
      "init-model",
      "Write a randomly initialised Hugging Face checkpoint (config.json + "
      "model.safetensors) that transformers can load, and optionally sample data rows.");
  sub->add_option("--out", o->out, "output directory")->required();
  sub->add_flag("--overwrite", o->overwrite, "replace the files of an existing --out folder");
  sub->add_option("--arch", o->arch, "llama | qwen2 | qwen3")
      ->check(CLI::IsMember({"llama", "qwen2", "qwen3"}));
  sub->add_option("--layers", o->layers)->check(integer_in<int64_t>(1, ModelLimits::layers));
  sub->add_option("--hidden", o->hidden)->check(integer_in<int64_t>(1, ModelLimits::hidden));
  sub->add_option("--heads", o->heads)->check(integer_in<int64_t>(1, ModelLimits::heads));
  sub->add_option("--kv-heads", o->kv_heads)->check(integer_in<int64_t>(1, ModelLimits::heads));
  sub->add_option("--head-dim", o->head_dim)->check(integer_in<int64_t>(1, ModelLimits::head_dim));
  sub->add_option("--ffn", o->ffn, "intermediate_size")
      ->check(integer_in<int64_t>(1, ModelLimits::ffn));
  sub->add_option("--vocab", o->vocab)->check(integer_in<int64_t>(1, ModelLimits::vocab));
  sub->add_option("--tied", o->tied, "tie_word_embeddings (true|false)");
  sub->add_option("--seed", o->seed)->check(integer_in<uint64_t>(0));
  sub->add_option("--dtype", o->dtype, "f32 | bf16 | f16")
      ->check(CLI::IsMember({"f32", "bf16", "f16"}));
  sub->add_option("--sample-data", o->sample,
                  "also write this many random token rows to FILE (see --records)");
  sub->add_option("--records", o->records)->check(integer_in<int64_t>(1, int64_t{1} << 30));
  sub->add_option("--length", o->length, "ids per sampled record")
      ->check(integer_in<int64_t>(2, 1 << 20));
  return [o]() {
    ModelConfig c;
    c.arch = o->arch == "llama" ? Arch::Llama : o->arch == "qwen2" ? Arch::Qwen2 : Arch::Qwen3;
    c.vocab_size = o->vocab;
    c.hidden_size = o->hidden;
    c.intermediate_size = o->ffn;
    c.num_layers = o->layers;
    c.num_heads = o->heads;
    c.num_kv_heads = o->kv_heads;
    c.head_dim = o->head_dim;
    c.max_position_embeddings = 4096;
    c.rope_theta = c.arch == Arch::Llama ? 500000.0 : 1000000.0;
    c.qkv_bias = c.arch == Arch::Qwen2;
    c.qk_norm = c.arch == Arch::Qwen3;
    c.tie_word_embeddings = o->tied;
    static const ConfigFieldNames names{
        "--vocab",      "--hidden",   "--ffn",      "--layers",
        "--heads",      "--kv-heads", "--head-dim", "max_position_embeddings",
        "rms_norm_eps", "rope_theta"};
    c.validate("init-model", names);
    require_new_folder(o->out, o->overwrite);
    Model m(c, ParallelContext::single());
    m.init_random(o->seed);
    const DType dt = o->dtype == "bf16" ? DType::BF16 : o->dtype == "f16" ? DType::F16 : DType::F32;
    m.save(o->out, dt);
    std::printf("wrote %s (%s, L=%lld, d=%lld, V=%lld, %zu parameters)\n", o->out.c_str(),
                arch_name(c.arch), (long long)c.num_layers, (long long)c.hidden_size,
                (long long)c.vocab_size, m.params().total_elements());
    if (!o->sample.empty()) {
      std::ostringstream f;
      uint64_t s = o->seed * 0x9e3779b97f4a7c15ull + 1;
      for (int64_t r = 0; r < o->records; ++r) {
        f << "{\"ids\": [";
        for (int64_t t = 0; t < o->length; ++t) {
          s ^= s << 13;
          s ^= s >> 7;
          s ^= s << 17;
          f << (t ? ", " : "") << (s % static_cast<uint64_t>(o->vocab));
        }
        f << "], \"response_start\": " << o->length / 3 << "}\n";
      }
      write_file_atomic(o->sample, f.str());
      std::printf("wrote %s (%lld records of %lld ids)\n", o->sample.c_str(), (long long)o->records,
                  (long long)o->length);
    }
    return 0;
  };
}

}  // namespace bupo::cli
