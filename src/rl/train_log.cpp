#include "rl/train_log.hpp"

#include <cmath>
#include <filesystem>
#include <fstream>
#include <limits>
#include <sstream>

#include "bupo/version.hpp"
#include "core/error.hpp"
#include "io/atomic_file.hpp"
#include "io/json_util.hpp"

namespace fs = std::filesystem;

namespace bupo::rl {
namespace {

// Truncate every dataset of a group to the rows whose <group>/step <= keep_step.
void truncate_group(hid_t file, const std::string& group, int64_t keep_step) {
  if (!h5::exists(file, group + "/step")) return;
  const auto steps = h5::read_i64(file, group + "/step");
  int64_t keep = 0;
  while (keep < static_cast<int64_t>(steps.size()) && steps[static_cast<size_t>(keep)] <= keep_step)
    ++keep;
  h5::Handle g(H5Gopen2(file, group.c_str(), H5P_DEFAULT), H5Gclose);
  BUPO_CHECK(g.id() >= 0, "HDF5: cannot open group ", group);
  hsize_t n = 0;
  H5Gget_num_objs(g.id(), &n);
  for (hsize_t i = 0; i < n; ++i) {
    char name[256];
    H5Gget_objname_by_idx(g.id(), i, name, sizeof name);
    if (H5Gget_objtype_by_idx(g.id(), i) != H5G_DATASET) continue;
    auto ds = h5::RowDataset::open(file, group + "/" + name, h5::Kind::F32);
    ds.truncate(keep);
  }
}

void truncate_jsonl(const std::string& path, int64_t keep_step) {
  if (!fs::exists(path)) return;
  std::ifstream in(path);
  std::string line, kept;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    json j;
    try {
      j = json::parse(line);
    } catch (const json::exception&) {
      break;  // a torn last line from a killed writer
    }
    if (!j.contains("step") || j["step"].get<int64_t>() > keep_step) break;
    kept += line + "\n";
  }
  in.close();
  write_file_atomic(path, kept);
}

}  // namespace

TrainLog::TrainLog(const std::string& h5_path, const std::string& jsonl_path, int num_layers,
                   const std::string& config_toml, bool resume, int64_t keep_step, bool overwrite)
    : jsonl_path_(jsonl_path), L_(num_layers) {
  if (resume && fs::exists(h5_path)) {
    file_ = h5::File::open_rw(h5_path);
    const int64_t v = h5::read_attr_int(file_.id(), "/", "schema_version");
    BUPO_CHECK(v == kTrainSchemaVersion, h5_path, ": schema_version ", v, "; this bupo writes ",
               kTrainSchemaVersion);
    truncate_group(file_.id(), "/steps", keep_step);
    truncate_group(file_.id(), "/entropy", keep_step);
    if (h5::exists(file_.id(), "/validation")) {
      h5::Handle g(H5Gopen2(file_.id(), "/validation", H5P_DEFAULT), H5Gclose);
      hsize_t n = 0;
      H5Gget_num_objs(g.id(), &n);
      std::vector<std::string> sets;
      for (hsize_t i = 0; i < n; ++i) {
        char name[256];
        H5Gget_objname_by_idx(g.id(), i, name, sizeof name);
        sets.push_back(name);
      }
      for (const auto& s : sets) truncate_group(file_.id(), "/validation/" + s, keep_step);
    }
    truncate_jsonl(jsonl_path_, keep_step);
    file_.set_attr("/", "resumed_at_step", keep_step);
  } else {
    BUPO_CHECK(overwrite || (!fs::exists(h5_path) && !fs::exists(jsonl_path)), h5_path,
               ": a run already exists in this folder; pass --resume to continue it or "
               "--overwrite to start again");
    file_ = h5::File::create(h5_path, true);
    file_.set_attr("/", "schema", std::string("bupo-train"));
    file_.set_attr("/", "schema_version", kTrainSchemaVersion);
    file_.set_attr("/", "program_version", std::string(kVersion));
    file_.set_attr("/", "created_by", std::string("bupo train"));
    file_.set_attr("/", "num_layers", static_cast<int64_t>(num_layers));
    write_file_atomic(jsonl_path_, "");
  }
  file_.set_attr("/", "config", config_toml);
  file_.flush();
}

h5::RowDataset& TrainLog::dataset(const std::string& path, h5::Kind kind, int64_t cols) {
  auto it = ds_.find(path);
  if (it != ds_.end()) return it->second;
  h5::RowDataset d = h5::exists(file_.id(), path)
                         ? h5::RowDataset::open(file_.id(), path, kind)
                         : h5::RowDataset(file_.id(), path, kind, cols, 256, "");
  return ds_.emplace(path, std::move(d)).first->second;
}

void TrainLog::write_step(int64_t step,
                          const std::vector<std::pair<std::string, double>>& metrics) {
  dataset("/steps/step", h5::Kind::I64, 0).append(&step, 1);
  json j = {{"step", step}};
  for (const auto& [name, v] : metrics) {
    const float f = static_cast<float>(v);
    dataset("/steps/" + name, h5::Kind::F32, 0).append(&f, 1);
    j[name] = std::isfinite(v) ? json(v) : json(nullptr);
  }
  std::ofstream out(jsonl_path_, std::ios::app);
  out << j.dump() << "\n";
  out.flush();
  BUPO_CHECK(out.good(), jsonl_path_, ": write failed");
}

void TrainLog::write_entropy(int64_t step, const EntropySummary& e) {
  const int64_t L = L_;
  dataset("/entropy/step", h5::Kind::I64, 0).append(&step, 1);
  const float tokens = static_cast<float>(e.tokens);
  dataset("/entropy/tokens", h5::Kind::F32, 0).append(&tokens, 1);
  dataset("/entropy/layer", h5::Kind::F32, L + 1).append(e.layer.data(), 1);
  dataset("/entropy/attn_in", h5::Kind::F32, L).append(e.attn_in.data(), 1);
  dataset("/entropy/attn_out", h5::Kind::F32, L).append(e.attn_out.data(), 1);
  dataset("/entropy/ffn_in", h5::Kind::F32, L).append(e.ffn_in.data(), 1);
  dataset("/entropy/ffn_out", h5::Kind::F32, L).append(e.ffn_out.data(), 1);
  dataset("/entropy/output", h5::Kind::F32, 0).append(&e.output, 1);
  dataset("/entropy/bupo_layer", h5::Kind::F32, 0).append(&e.bupo_layer, 1);
}

void TrainLog::write_validation(int64_t step, const std::string& set, double avg,
                                const std::vector<int64_t>& k, const std::vector<double>& pass) {
  const std::string g = "/validation/" + set;
  dataset(g + "/step", h5::Kind::I64, 0).append(&step, 1);
  const float a = static_cast<float>(avg);
  dataset(g + "/avg", h5::Kind::F32, 0).append(&a, 1);
  std::vector<float> p(pass.begin(), pass.end());
  auto& pk = dataset(g + "/pass_at_k", h5::Kind::F32, static_cast<int64_t>(k.size()));
  pk.append(p.data(), 1);
  std::string ks;
  for (int64_t v : k) {
    if (!ks.empty()) ks += ',';
    ks += std::to_string(v);
  }
  file_.set_attr(g + "/pass_at_k", "k", ks);
}

void write_layer_evidence(h5::File& f, const std::string& group, const std::vector<float>& ffn_dh,
                          const std::vector<float>& attn_dh, int64_t chosen, int64_t tokens) {
  h5::RowDataset(f.id(), group + "/ffn_delta_h", h5::Kind::F32, 0, 256,
                 "mean Delta H_FFN per layer l = 1..L (papers.md Eq. 13)")
      .append(ffn_dh.data(), static_cast<int64_t>(ffn_dh.size()));
  h5::RowDataset(f.id(), group + "/attn_delta_h", h5::Kind::F32, 0, 256,
                 "mean Delta H_ATTN per layer l = 1..L (papers.md Eq. 12)")
      .append(attn_dh.data(), static_cast<int64_t>(attn_dh.size()));
  const std::string obj = group.empty() ? "/" : group;
  f.set_attr(obj, "chosen_layer", chosen);
  f.set_attr(obj, "tokens", tokens);
  f.set_attr(obj, "rule", std::string("last layer with mean Delta H_FFN > 0 (papers.md 1.6)"));
}

void TrainLog::write_layer_selection(const std::vector<float>& ffn_dh,
                                     const std::vector<float>& attn_dh, int64_t chosen,
                                     int64_t tokens) {
  const std::string g = "/bupo_layer_selection";
  if (h5::exists(file_.id(), g)) return;  // written once, at step 0
  write_layer_evidence(file_, g, ffn_dh, attn_dh, chosen, tokens);
}

void TrainLog::flush() {
  file_.flush();
}

}  // namespace bupo::rl
