// Model weights in and out: deterministic random initialisation, Hugging Face safetensors
// checkpoints (sharded slices for tensor parallelism), and export. Weights pass through host
// staging buffers and are uploaded to the model's backend.
#include <charconv>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <numbers>
#include <set>

#include "core/error.hpp"
#include "io/atomic_file.hpp"
#include "io/safetensors.hpp"
#include "model/gather.hpp"
#include "model/model.hpp"

namespace bupo {
namespace fs = std::filesystem;

void Model::init_random(uint64_t seed, float stddev) {
  // splitmix64 + Box-Muller: the same weights on every platform and for every TP layout (each
  // element's value depends only on (seed, tensor name, global index)).
  auto mix = [](uint64_t z) {
    z += 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
  };
  std::vector<float> host;
  for (auto& p : params_.all()) {
    if (p.name.ends_with("norm.weight") || p.name.ends_with("layernorm.weight")) continue;
    if (p.name == "score.bias") {  // nn.Linear's bias of a fresh value head starts at zero
      be_->zero(p.weight());
      continue;
    }
    uint64_t h = seed;
    for (char c : p.name) h = mix(h ^ static_cast<unsigned char>(c));
    const int64_t cols = p.shape.size() == 2 ? p.shape[1] : 1;
    const int64_t full_cols = p.full_shape.size() == 2 ? p.full_shape[1] : 1;
    host.resize(static_cast<size_t>(p.numel()));
    for (int64_t i = 0; i < p.numel(); ++i) {
      int64_t rr = i / cols, cc = i % cols;
      if (p.shard_dim == 0) rr += p.shard_offset;
      if (p.shard_dim == 1) cc += p.shard_offset;
      const uint64_t gi = static_cast<uint64_t>(rr * full_cols + cc);
      const uint64_t a = mix(h ^ (2 * gi)), b = mix(h ^ (2 * gi + 1));
      const double u1 = (static_cast<double>(a >> 11) + 1.0) / 9007199254740993.0;
      const double u2 = static_cast<double>(b >> 11) / 9007199254740992.0;
      host[static_cast<size_t>(i)] = static_cast<float>(stddev * std::sqrt(-2.0 * std::log(u1)) *
                                                        std::cos(2.0 * std::numbers::pi * u2));
    }
    be_->upload(p.weight(), host.data());
  }
  params_.refresh_working_copy();
}

// ---------------------------------------------------------------------------- checkpoints
std::unique_ptr<Model> Model::load(const std::string& dir, ParallelContext pc, Backend& be) {
  const fs::path cfg_path = fs::path(dir) / "config.json";
  BUPO_CHECK(fs::exists(cfg_path), dir,
             ": no config.json (expected a Hugging Face model directory)");
  auto m = std::make_unique<Model>(ModelConfig::load(cfg_path.string()), std::move(pc), be);
  m->load_weights(dir);
  return m;
}

namespace {
// A checkpoint tensor the config does not account for means config.json and the weights
// disagree (layers beyond num_hidden_layers, biases or q/k norms of another architecture, an
// lm_head under tied embeddings): loading the rest would silently run a different model. This
// rank holds only its pipeline stage's layers, so another layer's tensor is checked by its
// suffix against this stage's.
void require_no_unused_tensors(const ModelConfig& cfg, const ParamStore& params,
                               const CheckpointReader& ck) {
  const std::string pre = "model.layers.";
  std::set<std::string> layer_suffixes;
  for (const auto& p : params.all())
    if (p.name.rfind(pre, 0) == 0)
      layer_suffixes.insert(p.name.substr(p.name.find('.', pre.size())));
  for (const std::string& name : ck.names()) {
    if (params.find(name) != nullptr) continue;
    if (name.rfind(pre, 0) == 0) {
      const size_t dot = name.find('.', pre.size());
      const std::string index =
          name.substr(pre.size(), dot == std::string::npos ? 0 : dot - pre.size());
      int64_t l = -1;
      const auto [end, ec] = std::from_chars(index.data(), index.data() + index.size(), l);
      const std::string suffix = dot == std::string::npos ? "" : name.substr(dot);
      if (ec == std::errc() && end == index.data() + index.size() && !index.empty() && l >= 0) {
        if (suffix == ".self_attn.rotary_emb.inv_freq") continue;  // a buffer old exports kept
        if (l < cfg.num_layers && layer_suffixes.contains(suffix)) continue;
        BUPO_CHECK(l < cfg.num_layers, ck.file_of(name).path(), ": tensor '", name,
                   "' belongs to layer ", l + 1,
                   ", but config.json has num_hidden_layers = ", cfg.num_layers,
                   " (config.json and the weights disagree)");
      }
    }
    fail(ck.file_of(name).path(), ": tensor '", name, "' is not used by config.json (",
         cfg.architecture(), cfg.tie_word_embeddings ? ", tied embeddings" : "",
         cfg.qkv_bias ? ", q/k/v bias" : ", no q/k/v bias",
         "): config.json and the weights disagree");
  }
}

}  // namespace

void Model::load_weights(const std::string& path) {
  const CheckpointReader ck = CheckpointReader::open(path);
  std::vector<float> full, shard;
  for (auto& p : params_.all()) {
    BUPO_CHECK(ck.contains(p.name), path, ": missing tensor '", p.name,
               "' (required by config.json: ", cfg_.architecture(), ", ", cfg_.num_layers,
               " layers", cfg_.tie_word_embeddings ? ", tied embeddings" : ", untied embeddings",
               ")");
    const TensorInfo& t = ck.info(p.name);
    const SafetensorsFile& f = ck.file_of(p.name);
    BUPO_CHECK(t.shape == p.full_shape, f.path(), ": tensor '", p.name, "': shape ",
               shape_str(t.shape), " disagrees with config.json (expected ",
               shape_str(p.full_shape), ")");
    full.resize(static_cast<size_t>(numel_of(p.full_shape)));
    f.read_f32(t, full.data());
    require_finite_weights(f.path(), p.name, full.data(), full.size());
    if (p.shard_dim < 0 || p.shape == p.full_shape) {
      be_->upload(p.weight(), full.data());
      continue;
    }
    shard.resize(static_cast<size_t>(p.numel()));
    copy_shard_from_full(p, full.data(), shard.data());
    be_->upload(p.weight(), shard.data());
  }
  params_.refresh_working_copy();
  require_no_unused_tensors(cfg_, params_, ck);
}

void Model::save(const std::string& dir, DType dtype, uint64_t max_shard_bytes) const {
  BUPO_CHECK(pc_.tp_size() == 1, "Model::save: gather TP shards first (tp=", pc_.tp_size(), ")");
  fs::create_directories(dir);
  const std::vector<float> host = params_.weights_to_host();
  std::vector<NamedTensor> ts;
  for (const auto& p : params_.all()) ts.push_back({p.name, p.shape, host.data() + p.offset});
  save_checkpoint_weights(dir, ts, dtype, max_shard_bytes);
  ModelConfig c = cfg_;
  c.torch_dtype = dtype == DType::BF16 ? "bfloat16" : dtype == DType::F16 ? "float16" : "float32";
  write_file_atomic((fs::path(dir) / "config.json").string(), c.to_json().dump(2) + "\n");
}

}  // namespace bupo
