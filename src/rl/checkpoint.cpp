#include "rl/checkpoint.hpp"

#include "model/gather.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "bupo/version.hpp"
#include "core/error.hpp"
#include "io/atomic_file.hpp"
#include "io/json_util.hpp"

namespace fs = std::filesystem;

namespace bupo::rl {
namespace {

void write_file(const fs::path& p, const std::string& data) {
  write_file_atomic(p.string(), data);
}

std::string hex(double v) {  // exact round trip
  char buf[64];
  std::snprintf(buf, sizeof buf, "%a", v);
  return buf;
}
double unhex(const json& j, const std::string& where, const char* key) {
  BUPO_CHECK(j.contains(key) && j[key].is_string(), where, ": field '", key,
             "': expected a hex-float string");
  const std::string s = j[key].get<std::string>();
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  BUPO_CHECK(end && *end == '\0', where, ": field '", key, "': '", s, "' is not a number");
  return v;
}

constexpr char kMagic[8] = {'B', 'U', 'P', 'O', 'A', 'D', 'A', 'M'};

std::string step_name(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step_%08lld", static_cast<long long>(step));
  return buf;
}

std::string read_all(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  BUPO_CHECK(in.good(), p.string(), ": cannot open");
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}

std::string hex64(uint64_t v) {
  char buf[20];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

constexpr const char* kManifest = "checksums.json";

}  // namespace

uint64_t content_hash(const void* data, size_t bytes) {
  const auto* p = static_cast<const unsigned char*>(data);
  uint64_t h = 0x243f6a8885a308d3ull;
  auto step = [&h](uint64_t w) {
    h = (h ^ w) * 0x9e3779b97f4a7c15ull;  // odd multiplier: a bijection of h
    h ^= h >> 29;                         // xorshift: a bijection of h
  };
  size_t i = 0;
  for (; i + 8 <= bytes; i += 8) {
    uint64_t w;
    std::memcpy(&w, p + i, 8);
    step(w);
  }
  uint64_t tail = 0;
  std::memcpy(&tail, p + i, bytes - i);
  step(tail);
  step(static_cast<uint64_t>(bytes));
  return h;
}

std::string verify_checkpoint(const std::string& dir) {
  const fs::path d(dir);
  if (!fs::exists(d / "COMPLETE")) return dir + ": not a complete checkpoint (no COMPLETE marker)";
  if (!fs::exists(d / kManifest)) return "";
  json m;
  try {
    m = json::parse(read_all(d / kManifest));
  } catch (const std::exception& e) {
    return (d / kManifest).string() + ": unreadable (" + e.what() + ")";
  }
  if (!m.is_object() || m.empty()) return (d / kManifest).string() + ": not a file -> hash map";
  for (const auto& [name, want] : m.items()) {
    const fs::path f = d / name;
    if (!fs::exists(f)) return f.string() + ": missing (listed in " + kManifest + ")";
    const std::string bytes = read_all(f);
    const std::string got = hex64(content_hash(bytes.data(), bytes.size()));
    if (!want.is_string() || got != want.get<std::string>())
      return f.string() + ": checksum mismatch (stored " +
             (want.is_string() ? want.get<std::string>() : want.dump()) + ", computed " + got +
             "): the file is damaged";
  }
  return "";
}

namespace {
// optimizer.bin: magic, n_params, total, steps[n], m[total], v[total]
void write_optimizer_file(const fs::path& path, const Model& model, const AdamW& opt) {
  const auto& params = model.params().all();
  const uint64_t n = params.size(), total = model.params().total_elements();
  std::string buf(kMagic, 8);
  auto put = [&](const void* p, size_t bytes) { buf.append(static_cast<const char*>(p), bytes); };
  put(&n, 8);
  put(&total, 8);
  for (size_t i = 0; i < n; ++i) {
    const int64_t s = opt.step_count(i);
    put(&s, 8);
  }
  const std::vector<float> m = opt.exp_avg_to_host(), v = opt.exp_avg_sq_to_host();
  BUPO_CHECK(m.size() == total && v.size() == total,
             "checkpoint: optimizer state does not match the model");
  put(m.data(), total * sizeof(float));
  put(v.data(), total * sizeof(float));
  write_file(path, buf);
}

// Every regular file under `dir`, as paths relative to it (the critic's folder included).
std::vector<fs::path> files_under(const fs::path& dir) {
  std::vector<fs::path> out;
  for (const auto& e : fs::recursive_directory_iterator(dir))
    if (e.is_regular_file()) out.push_back(fs::relative(e.path(), dir));
  std::sort(out.begin(), out.end());
  return out;
}

// Every file of checkpoint `name` into `tmp`, fsync'ed, then its COMPLETE marker.
void write_checkpoint_files(const fs::path& tmp, const std::string& name, const Model& model,
                            const AdamW& opt, const TrainState& st, const std::string& config_toml,
                            const std::string& tokenizer_json, const CheckpointCritic* critic) {
  model.save(tmp.string(), DType::F32);
  write_file(tmp / "tokenizer.json", tokenizer_json);
  write_file(tmp / "train_config.toml", config_toml);
  write_optimizer_file(tmp / "optimizer.bin", model, opt);
  if (critic) {  // PPO's value model: a Hugging Face *ForTokenClassification folder + its AdamW
    critic->model->save((tmp / kCriticDir).string(), DType::F32);
    write_optimizer_file(tmp / kCriticDir / "optimizer.bin", *critic->model, *critic->opt);
  }
  json js = {{"step", st.step},
             {"sampler",
              {{"epoch", st.sampler.epoch}, {"pos", st.sampler.pos}, {"drawn", st.sampler.drawn}}},
             {"hapo_stats",
              {{"valid", st.hapo_stats.valid},
               {"pivot", hex(st.hapo_stats.pivot)},
               {"std", hex(st.hapo_stats.std)},
               {"pos_max", hex(st.hapo_stats.pos_max)},
               {"neg_min", hex(st.hapo_stats.neg_min)}}},
             {"nonfinite_in_row", st.nonfinite_in_row},
             {"optimizer_steps", st.optimizer_steps},
             {"bupo_layer", st.bupo_layer},
             {"program_version", kVersion}};
  write_file(tmp / "state.json", js.dump(2));
  {  // the manifest: every file's hash, verified on resume
    json sums = json::object();
    for (const fs::path& f : files_under(tmp)) {
      const std::string bytes = read_all(tmp / f);
      sums[f.generic_string()] = hex64(content_hash(bytes.data(), bytes.size()));
    }
    write_file(tmp / kManifest, sums.dump(1));
  }
  write_file(tmp / "COMPLETE", name + "\n");
  for (const fs::path& f : files_under(tmp)) fsync_path(tmp / f);
  if (critic) fsync_path(tmp / kCriticDir);
  fsync_path(tmp);
}
}  // namespace

std::string save_checkpoint(const std::string& out_dir, const Model& model, const AdamW& opt,
                            const TrainState& st, const std::string& config_toml,
                            const std::string& tokenizer_json, int64_t keep,
                            const CheckpointCritic* critic) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  fs::create_directories(root);
  const std::string name = step_name(st.step);
  const fs::path tmp = root / (name + ".partial"), final_dir = root / name;
  fs::remove_all(tmp);
  fs::create_directories(tmp);
  try {
    write_checkpoint_files(tmp, name, model, opt, st, config_toml, tokenizer_json, critic);
  } catch (...) {  // a failed write (full disk, quota) leaves no half checkpoint behind
    std::error_code ec;
    fs::remove_all(tmp, ec);
    throw;
  }
  fs::remove_all(final_dir);
  fs::rename(tmp, final_dir);
  fsync_path(root);
  const fs::path latest_tmp = root / "latest.tmp";
  write_file(latest_tmp, name + "\n");
  fsync_path(latest_tmp);
  fs::rename(latest_tmp, root / "latest");
  fsync_path(root);

  // keep the newest `keep` complete checkpoints
  const auto done = complete_checkpoints(out_dir);
  for (size_t i = 0; i + static_cast<size_t>(keep) < done.size(); ++i) fs::remove_all(done[i]);
  return final_dir.string();
}

void remove_partial_checkpoints(const std::string& out_dir) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  std::error_code ec;
  if (!fs::is_directory(root, ec)) return;
  std::vector<fs::path> stale;
  for (const auto& e : fs::directory_iterator(root, ec)) {
    const std::string n = e.path().filename().string();
    if (n.size() > 8 && n.substr(n.size() - 8) == ".partial") stale.push_back(e.path());
    if (n == "latest.tmp") stale.push_back(e.path());
  }
  for (const auto& p : stale) fs::remove_all(p, ec);
}

std::vector<std::string> complete_checkpoints(const std::string& out_dir) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  std::vector<std::string> done;
  if (!fs::exists(root)) return done;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step_", 0) == 0 && n.find('.') == std::string::npos &&
        fs::exists(e.path() / "COMPLETE"))
      done.push_back(e.path().string());
  }
  std::sort(done.begin(), done.end());  // zero-padded step numbers: lexical = numeric order
  return done;
}

std::string latest_checkpoint(const std::string& out_dir) {
  const auto done = complete_checkpoints(out_dir);
  return done.empty() ? "" : done.back();
}

void discard_checkpoints_after(const std::string& out_dir, int64_t step) {
  const fs::path root = fs::path(out_dir) / "checkpoints";
  if (!fs::exists(root)) return;
  for (const auto& e : fs::directory_iterator(root)) {
    const std::string n = e.path().filename().string();
    if (e.is_directory() && n.rfind("step_", 0) == 0 && n.size() >= 13 &&
        std::atoll(n.substr(5, 8).c_str()) > step)
      fs::remove_all(e.path());
  }
}

namespace {
// optimizer.bin into `opt`, the consolidated layout sliced for this rank's shard of `model`.
void read_optimizer_file(const fs::path& file, Model& model, AdamW& opt) {
  const std::string path = file.string();
  const std::string buf = read_all(file);
  BUPO_CHECK(buf.size() >= 24 && std::memcmp(buf.data(), kMagic, 8) == 0, path,
             ": not a bupo optimizer state (bad magic)");
  uint64_t n = 0, total = 0;
  std::memcpy(&n, buf.data() + 8, 8);
  std::memcpy(&total, buf.data() + 16, 8);
  // The file holds the consolidated (single-rank) layout; a sharded model takes its slices.
  const ParallelContext& pc = model.parallel();
  const bool sharded = pc.tp_size() > 1 || pc.pp_size() > 1;
  std::unique_ptr<Model> layout;
  if (sharded) layout = std::make_unique<Model>(model.config(), ParallelContext::single());
  const ParamStore& full = sharded ? layout->params() : model.params();
  BUPO_CHECK(n == full.all().size() && total == full.total_elements(), path, ": holds ", n,
             " parameters / ", total, " elements; the model has ", full.all().size(), " / ",
             full.total_elements());
  const uint64_t need = 24 + 8 * n + 8 * total;
  BUPO_CHECK(buf.size() == need, path, ": ", buf.size(), " bytes; expected ", need);
  std::vector<int64_t> steps(n);
  std::memcpy(steps.data(), buf.data() + 24, 8 * n);
  const auto* m_full = reinterpret_cast<const float*>(buf.data() + 24 + 8 * n);
  const float* v_full = m_full + total;
  if (!sharded) {
    opt.moments_from_host(std::vector<float>(m_full, m_full + total),
                          std::vector<float>(v_full, v_full + total));
    opt.set_step_counts(steps);
  } else {
    const auto& local = model.params().all();
    std::vector<int64_t> mine(local.size());
    std::vector<float> m(model.params().total_elements(), 0.0f), v(m.size(), 0.0f);
    for (size_t i = 0; i < local.size(); ++i) {
      const Param* fp = full.find(local[i].name);
      BUPO_CHECK(fp != nullptr, path, ": no state for '", local[i].name, "'");
      copy_shard_from_full(local[i], m_full + fp->offset, m.data() + local[i].offset);
      copy_shard_from_full(local[i], v_full + fp->offset, v.data() + local[i].offset);
      mine[i] = steps[static_cast<size_t>(fp - full.all().data())];
    }
    opt.moments_from_host(m, v);
    opt.set_step_counts(mine);
  }
}
}  // namespace

void load_checkpoint(const std::string& dir, Model& model, AdamW& opt, TrainState& st,
                     Model* critic, AdamW* critic_opt) {
  const fs::path d(dir);
  BUPO_CHECK(fs::exists(d / "COMPLETE"), dir, ": not a complete checkpoint (no COMPLETE marker)");
  model.load_weights(dir);
  read_optimizer_file(d / "optimizer.bin", model, opt);
  if (critic) {
    const fs::path cd = d / kCriticDir;
    BUPO_CHECK(fs::exists(cd / "config.json"), cd.string(),
               ": no critic in this checkpoint (its run had no value model: "
               "algorithm.adv_estimator was not \"gae\")");
    const ModelConfig saved = ModelConfig::load((cd / "config.json").string());
    const ModelConfig& want = critic->config();
    BUPO_CHECK(saved.value_head && saved.num_layers == want.num_layers &&
                   saved.hidden_size == want.hidden_size && saved.vocab_size == want.vocab_size,
               (cd / "config.json").string(), ": the saved critic (", saved.architecture(), ", ",
               saved.num_layers, " layers, d = ", saved.hidden_size,
               ") is not the value model this config builds (", want.architecture(), ", ",
               want.num_layers, " layers, d = ", want.hidden_size, ")");
    critic->load_weights(cd.string());
    read_optimizer_file(cd / "optimizer.bin", *critic, *critic_opt);
  }
  const std::string sp = (d / "state.json").string();
  const json j = read_json_file(sp);
  try {
    st.step = j.at("step").get<int64_t>();
    st.sampler.epoch = j.at("sampler").at("epoch").get<int64_t>();
    st.sampler.pos = j.at("sampler").at("pos").get<int64_t>();
    st.sampler.drawn = j.at("sampler").at("drawn").get<int64_t>();
    const json& h = j.at("hapo_stats");
    st.hapo_stats.valid = h.at("valid").get<bool>();
    st.hapo_stats.pivot = unhex(h, sp, "pivot");
    st.hapo_stats.std = unhex(h, sp, "std");
    st.hapo_stats.pos_max = unhex(h, sp, "pos_max");
    st.hapo_stats.neg_min = unhex(h, sp, "neg_min");
    st.nonfinite_in_row = j.at("nonfinite_in_row").get<int64_t>();
    st.optimizer_steps = j.at("optimizer_steps").get<int64_t>();
    st.bupo_layer = j.at("bupo_layer").get<int64_t>();
  } catch (const json::exception& e) {
    fail(sp, ": malformed training state: ", e.what());
  }
  BUPO_CHECK(st.step >= 0 && st.sampler.epoch >= 0 && st.sampler.pos >= 0 &&
                 st.sampler.drawn >= 0 && st.nonfinite_in_row >= 0 && st.optimizer_steps >= 0 &&
                 st.bupo_layer >= 0 && st.bupo_layer <= model.config().num_layers,
             sp, ": a value is out of range (negative, or bupo_layer beyond the model's ",
             model.config().num_layers, " layers)");
}

}  // namespace bupo::rl
