#include "rl/train_log.hpp"

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <set>

#include "bupo/version.hpp"
#include "core/error.hpp"
#include "io/atomic_file.hpp"
#include "rl/journal.hpp"
#include "rl/validation.hpp"

namespace fs = std::filesystem;

namespace bupo::rl {
namespace {

constexpr float kNaN = std::numeric_limits<float>::quiet_NaN();
const char* const kEntropyRows[] = {"layer", "attn_in", "attn_out", "ffn_in", "ffn_out"};
// The Fig. 5/12 rows of EntropySummary: /entropy/<name> and the journal key, (L+1) or (L) wide.
struct GeometryRow {
  const char* name;
  std::vector<float> EntropySummary::*field;
  bool per_layer_and_embedding;  // L+1 values (l = 0..L); else L (l = 1..L)
};
const GeometryRow kGeometryRows[] = {{"cos_to_top", &EntropySummary::cos_top, true},
                                     {"kl_to_output", &EntropySummary::kl_layer, true},
                                     {"ppl_layer", &EntropySummary::ppl_layer, true},
                                     {"cos_attn_residual", &EntropySummary::cos_attn, false},
                                     {"cos_ffn_residual", &EntropySummary::cos_ffn, false}};

// JSON of a float row: NaN/Inf as null (JSON has neither), read back as NaN.
json floats_json(const std::vector<float>& v) {
  json a = json::array();
  for (float x : v) a.push_back(std::isfinite(x) ? json(x) : json(nullptr));
  return a;
}
float json_float(const json& j) {
  return j.is_number() ? j.get<float>() : kNaN;
}
std::vector<float> json_floats(const json& j, size_t n) {
  std::vector<float> v(n, kNaN);
  if (j.is_array())
    for (size_t i = 0; i < std::min(n, j.size()); ++i) v[i] = json_float(j[i]);
  return v;
}

// metrics.jsonl cut back to the steps <= keep_step (rewritten atomically); its records.
std::vector<json> truncate_jsonl(const std::string& path, int64_t keep_step) {
  if (!fs::exists(path)) return {};
  std::ifstream in(path, std::ios::binary);
  const std::string text{std::istreambuf_iterator<char>(in), {}};
  in.close();
  Journal j = parse_journal(text, path, keep_step);
  write_file_atomic(path, j.text);
  return std::move(j.records);
}

// Every dataset of a group cut back to the rows whose <group>/step <= keep_step.
void truncate_group(h5::File& f, const std::string& group, int64_t keep_step) {
  if (!h5::exists(f.id(), group + "/step")) return;
  const auto steps = h5::read_i64(f.id(), group + "/step");
  int64_t keep = 0;
  while (keep < static_cast<int64_t>(steps.size()) && steps[static_cast<size_t>(keep)] <= keep_step)
    ++keep;
  for (const auto& ds : h5::list_datasets(f.id(), group))
    if (fs::path(ds).parent_path().string() == group) h5::truncate_rows(f.id(), ds, keep);
}

std::vector<std::string> validation_sets(const std::vector<std::string>& datasets) {
  std::set<std::string> sets;
  for (const auto& ds : datasets)
    if (ds.rfind("/validation/", 0) == 0) sets.insert(fs::path(ds).parent_path().string());
  return {sets.begin(), sets.end()};
}

}  // namespace

void write_layer_evidence(h5::File& f, const std::string& group, const LayerEvidence& e) {
  h5::create_rows(f.id(), group + "/ffn_delta_h", h5::Kind::F32, 0, 256,
                  "mean Delta H_FFN per layer l = 1..L (papers.md Eq. 13)");
  h5::append_rows(f.id(), group + "/ffn_delta_h", h5::Kind::F32, e.ffn_dh.data(),
                  static_cast<int64_t>(e.ffn_dh.size()));
  h5::create_rows(f.id(), group + "/attn_delta_h", h5::Kind::F32, 0, 256,
                  "mean Delta H_ATTN per layer l = 1..L (papers.md Eq. 12)");
  h5::append_rows(f.id(), group + "/attn_delta_h", h5::Kind::F32, e.attn_dh.data(),
                  static_cast<int64_t>(e.attn_dh.size()));
  const std::string obj = group.empty() ? "/" : group;
  f.set_attr(obj, "chosen_layer", e.chosen);
  f.set_attr(obj, "last_positive_layer", e.last_positive);
  f.set_attr(obj, "end_of_first_positive_run_layer", e.first_run_end);
  f.set_attr(obj, "threshold", e.threshold);
  f.set_attr(obj, "tokens", e.tokens);
  f.set_attr(obj, "rule",
             e.rule + ": over layers 1..L-1, mean Delta H_FFN > threshold (papers.md 1.6)");
}

namespace {
json layer_evidence_json(const LayerEvidence& e) {
  return json{{"ffn_delta_h", floats_json(e.ffn_dh)},
              {"attn_delta_h", floats_json(e.attn_dh)},
              {"chosen_layer", e.chosen},
              {"last_positive_layer", e.last_positive},
              {"end_of_first_positive_run_layer", e.first_run_end},
              {"rule", e.rule},
              {"threshold", e.threshold},
              {"tokens", e.tokens}};
}
LayerEvidence layer_evidence_from_json(const json& sel, size_t L) {
  LayerEvidence e;
  e.ffn_dh = json_floats(sel.value("ffn_delta_h", json()), L);
  e.attn_dh = json_floats(sel.value("attn_delta_h", json()), L);
  e.chosen = sel.value("chosen_layer", int64_t{0});
  e.last_positive = sel.value("last_positive_layer", e.chosen);  // files before the two rules
  e.first_run_end = sel.value("end_of_first_positive_run_layer", int64_t{0});
  e.rule = sel.value("rule", std::string("last_positive"));
  e.threshold = sel.value("threshold", 0.0);
  e.tokens = sel.value("tokens", int64_t{0});
  return e;
}
}  // namespace

void TrainLog::init_file(h5::File& f) const {
  f.set_attr("/", "schema", std::string("bupo-train"));
  f.set_attr("/", "schema_version", kTrainSchemaVersion);
  f.set_attr("/", "program_version", std::string(kVersion));
  f.set_attr("/", "created_by", std::string("bupo train"));
  f.set_attr("/", "num_layers", static_cast<int64_t>(L_));
  f.set_attr("/", "config", config_toml_);
  const json history = json::array({{{"step", 0}, {"event", "created"}, {"config", config_toml_}}});
  f.set_attr("/", "config_history", history.dump());
}

TrainLog::TrainLog(const std::string& h5_path, const std::string& jsonl_path, int num_layers,
                   const std::string& config_toml, bool resume, int64_t keep_step, bool overwrite)
    : h5_path_(h5_path),
      jsonl_path_(jsonl_path),
      selection_path_((fs::path(jsonl_path).parent_path() / "bupo_layer_selection.json").string()),
      config_toml_(config_toml),
      L_(num_layers) {
  if (!resume) {
    BUPO_CHECK(overwrite || (!fs::exists(h5_path) && !fs::exists(jsonl_path)), h5_path,
               ": a run already exists in this folder; pass --resume to continue it or "
               "--overwrite to start again");
    file_ = h5::AppendFile::create(h5_path, true, [&](h5::File& f) { init_file(f); });
    write_file_atomic(jsonl_path_, "");
    std::error_code ec;
    fs::remove(selection_path_, ec);
    return;
  }
  const std::vector<json> journal = truncate_jsonl(jsonl_path_, keep_step);
  std::string why;
  if (!fs::exists(h5_path)) {
    why = "it is missing";
  } else {
    try {
      file_ = h5::AppendFile::open(h5_path);
    } catch (const Error& e) {
      why = e.what();
    }
  }
  if (why.empty()) {
    if (file_.repaired())
      notes_.push_back(h5_path +
                       ": its writer had died during a flush; repaired on a copy "
                       "(superblock marks cleared, as h5clear does)");
    int64_t version = -1;
    {
      h5::File f = h5::File::open_read(h5_path);
      if (h5::attr_exists(f.id(), "/", "schema_version"))
        version = h5::read_attr_int(f.id(), "/", "schema_version");
    }
    BUPO_CHECK(version == kTrainSchemaVersion, h5_path, ": schema_version ", version,
               "; this bupo writes ", kTrainSchemaVersion);
    std::string history = "[]";
    try {
      file_.edit([&](h5::File& f) {
        truncate_group(f, "/steps", keep_step);
        truncate_group(f, "/entropy", keep_step);
        for (const auto& g : validation_sets(h5::list_datasets(f.id())))
          truncate_group(f, g, keep_step);
        json h = json::array();
        if (h5::attr_exists(f.id(), "/", "config_history"))
          h = parse_json(h5::read_attr_string(f.id(), "/", "config_history"), h5_path);
        h.push_back({{"step", keep_step}, {"event", "resumed"}, {"config", config_toml_}});
        f.set_attr("/", "config_history", h.dump());
        f.set_attr("/", "config", config_toml_);
        f.set_attr("/", "resumed_at_step", keep_step);
      });
    } catch (const Error& e) {
      why = e.what();
    }
  }
  if (why.empty()) {  // the journal must not hold rows the file lacks
    int64_t steps = 0, entropy = 0;
    std::map<std::string, int64_t> validation;
    for (const auto& j : journal) {
      ++steps;
      if (j.contains("layer_entropy")) ++entropy;
      if (j.contains("validation") && j["validation"].is_object())
        for (auto it = j["validation"].begin(); it != j["validation"].end(); ++it)
          ++validation["/validation/" + it.key()];
    }
    if (file_.rows("/steps/step") < steps)
      why = "it holds " + std::to_string(file_.rows("/steps/step")) + " of the " +
            std::to_string(steps) + " steps in metrics.jsonl";
    else if (file_.rows("/entropy/step") < entropy)
      why = "it holds " + std::to_string(file_.rows("/entropy/step")) + " of the " +
            std::to_string(entropy) + " entropy rows in metrics.jsonl";
    for (const auto& [g, n] : validation)
      if (why.empty() && file_.rows(g + "/step") < n) why = "it lacks validation rows of " + g;
  }
  if (!why.empty()) rebuild(keep_step, journal, why);
}

void TrainLog::rebuild(int64_t keep_step, const std::vector<json>& journal,
                       const std::string& why) {
  const std::string& h5_path = h5_path_;
  std::string kept;
  if (fs::exists(h5_path)) {  // kept for inspection, never deleted
    kept = h5_path + ".damaged";
    std::error_code ec;
    fs::rename(h5_path, kept, ec);
    BUPO_CHECK(!ec, h5_path, ": cannot move the damaged file aside: ", ec.message());
  }
  file_ = h5::AppendFile::create(h5_path, true, [&](h5::File& f) {
    init_file(f);
    f.set_attr("/", "resumed_at_step", keep_step);
    f.set_attr("/", "rebuilt_from", std::string("metrics.jsonl"));
  });
  int64_t entropy_rows = 0;
  size_t line = 0;
  for (const auto& j : journal) try {
      ++line;
      const int64_t step = j["step"].get<int64_t>();
      if (j.contains("layer_entropy") && j["layer_entropy"].is_object()) {
        const json& e = j["layer_entropy"];
        EntropySummary s;
        s.tokens = e.value("tokens", int64_t{0});
        s.layer = json_floats(e.value("layer", json()), static_cast<size_t>(L_) + 1);
        std::vector<float>* rows[] = {&s.attn_in, &s.attn_out, &s.ffn_in, &s.ffn_out};
        for (int i = 0; i < 4; ++i)
          *rows[i] = json_floats(e.value(kEntropyRows[i + 1], json()), static_cast<size_t>(L_));
        s.output = json_float(e.value("output", json()));
        s.bupo_layer = json_float(e.value("bupo_layer", json()));
        for (const GeometryRow& g : kGeometryRows)  // NaN in journals from before them
          s.*g.field = json_floats(e.value(g.name, json()),
                                   static_cast<size_t>(L_) + (g.per_layer_and_embedding ? 1 : 0));
        s.ppl_output = json_float(e.value("ppl_output", json()));
        write_entropy(step, s);
        ++entropy_rows;
      }
      if (j.contains("validation") && j["validation"].is_object())
        for (auto it = j["validation"].begin(); it != j["validation"].end(); ++it) {
          const json& v = it.value();
          std::vector<int64_t> k;
          std::vector<double> pass;
          for (const auto& x : v.value("k", json::array())) k.push_back(x.get<int64_t>());
          for (const auto& x : v.value("pass_at_k", json::array()))
            pass.push_back(x.is_number() ? x.get<double>() : std::nan(""));
          pass.resize(k.size(), std::nan(""));
          write_validation(step, it.key(), json_float(v.value("avg", json())), k, pass);
        }
      std::vector<std::pair<std::string, double>> metrics;
      for (auto it = j.begin(); it != j.end(); ++it)
        if (it.key() != "step" && (it->is_number() || it->is_null()))
          metrics.emplace_back(it.key(), it->is_number() ? it->get<double>() : std::nan(""));
      queue_step_row(step, metrics);  // (not journaled again)
      pending_entropy_ = json();
      pending_validation_ = json();
    } catch (const json::exception& e) {  // a value of the wrong type, edited or corrupted
      fail(jsonl_path_, ":", line, ": malformed entry, cannot rebuild ", h5_path,
           " from it: ", e.what());
    }
  if (fs::exists(selection_path_)) {
    const json sel = read_json_file(selection_path_);
    const auto L = static_cast<size_t>(L_);
    file_.edit_at_flush([sel, L](h5::File& f) {
      write_layer_evidence(f, "/bupo_layer_selection", layer_evidence_from_json(sel, L));
    });
  }
  file_.flush();
  notes_.push_back(h5_path + ": " + why + (kept.empty() ? "" : "; kept it as " + kept) +
                   "; rebuilt it from metrics.jsonl (" + std::to_string(journal.size()) +
                   " steps, " + std::to_string(entropy_rows) + " entropy rows" +
                   (fs::exists(selection_path_) ? ", the layer selection" : "") +
                   ") up to the checkpoint's step " + std::to_string(keep_step));
}

json TrainLog::queue_step_row(int64_t step,
                              const std::vector<std::pair<std::string, double>>& metrics) {
  const int64_t before = file_.rows("/steps/step");
  file_.append("/steps/step", h5::Kind::I64, 0, &step, 1);
  json j = {{"step", step}};
  std::set<std::string> seen;
  for (const auto& [name, v] : metrics) {
    const std::string ds = "/steps/" + name;
    for (int64_t r = file_.rows(ds); r < before; ++r) file_.append(ds, h5::Kind::F32, 0, &kNaN, 1);
    const float f = static_cast<float>(v);
    file_.append(ds, h5::Kind::F32, 0, &f, 1);
    seen.insert(ds);
    j[name] = std::isfinite(v) ? json(v) : json(nullptr);
  }
  for (const auto& ds : file_.datasets("/steps/"))
    if (ds != "/steps/step" && !seen.count(ds) && file_.rows(ds) <= before)
      file_.append(ds, h5::Kind::F32, 0, &kNaN, 1);
  return j;
}

void TrainLog::write_step(int64_t step,
                          const std::vector<std::pair<std::string, double>>& metrics) {
  json j = queue_step_row(step, metrics);
  if (!pending_entropy_.is_null()) j["layer_entropy"] = pending_entropy_;
  if (!pending_validation_.is_null()) j["validation"] = pending_validation_;
  pending_entropy_ = json();
  pending_validation_ = json();
  append_durably(jsonl_path_, j.dump() + "\n");  // the journal first: a rebuild reads it
}

void TrainLog::write_entropy(int64_t step, const EntropySummary& e) {
  const int64_t L = L_;
  file_.append("/entropy/step", h5::Kind::I64, 0, &step, 1);
  const float tokens = static_cast<float>(e.tokens);
  file_.append("/entropy/tokens", h5::Kind::F32, 0, &tokens, 1);
  file_.append("/entropy/layer", h5::Kind::F32, L + 1, e.layer.data(), 1);
  file_.append("/entropy/attn_in", h5::Kind::F32, L, e.attn_in.data(), 1);
  file_.append("/entropy/attn_out", h5::Kind::F32, L, e.attn_out.data(), 1);
  file_.append("/entropy/ffn_in", h5::Kind::F32, L, e.ffn_in.data(), 1);
  file_.append("/entropy/ffn_out", h5::Kind::F32, L, e.ffn_out.data(), 1);
  file_.append("/entropy/output", h5::Kind::F32, 0, &e.output, 1);
  file_.append("/entropy/bupo_layer", h5::Kind::F32, 0, &e.bupo_layer, 1);
  // The Fig. 5/12 rows came later than the others: a file begun before them gets NaN rows for
  // its earlier steps, so every /entropy dataset keeps one row per /entropy/step.
  const int64_t row = file_.rows("/entropy/step") - 1;
  const auto append_padded = [&](const std::string& ds, int64_t width, const float* v) {
    const std::vector<float> nan(static_cast<size_t>(std::max<int64_t>(width, 1)), kNaN);
    for (int64_t r = file_.rows(ds); r < row; ++r)
      file_.append(ds, h5::Kind::F32, width, nan.data(), 1);
    file_.append(ds, h5::Kind::F32, width, v, 1);
  };
  json geometry = json::object();
  for (const GeometryRow& g : kGeometryRows) {
    const int64_t width = L + (g.per_layer_and_embedding ? 1 : 0);
    std::vector<float> v = e.*g.field;
    v.resize(static_cast<size_t>(width), kNaN);
    append_padded("/entropy/" + std::string(g.name), width, v.data());
    geometry[g.name] = floats_json(v);
  }
  append_padded("/entropy/ppl_output", 0, &e.ppl_output);
  pending_entropy_ = {{"tokens", e.tokens},
                      {"layer", floats_json(e.layer)},
                      {"attn_in", floats_json(e.attn_in)},
                      {"attn_out", floats_json(e.attn_out)},
                      {"ffn_in", floats_json(e.ffn_in)},
                      {"ffn_out", floats_json(e.ffn_out)},
                      {"output", floats_json({e.output})[0]},
                      {"bupo_layer", floats_json({e.bupo_layer})[0]},
                      {"ppl_output", floats_json({e.ppl_output})[0]}};
  pending_entropy_.update(geometry);
}

void TrainLog::write_validation(int64_t step, const std::string& set, double avg,
                                const std::vector<int64_t>& k, const std::vector<double>& pass) {
  const std::string g = "/validation/" + set;
  const auto K = static_cast<int64_t>(k.size());
  if (!file_.has(g + "/pass_at_k"))  // created with its `k` attribute, in this step's commit
    file_.edit_at_flush([g, K, k](h5::File& f) {
      h5::create_rows(f.id(), g + "/step", h5::Kind::I64, 0, 1024, "");
      h5::create_rows(f.id(), g + "/avg", h5::Kind::F32, 0, 1024, "");
      h5::create_rows(f.id(), g + "/pass_at_k", h5::Kind::F32, K, 1024, "");
      f.set_attr(g + "/pass_at_k", "k", k_attribute(k));
    });
  file_.append(g + "/step", h5::Kind::I64, 0, &step, 1);
  const float a = static_cast<float>(avg);
  file_.append(g + "/avg", h5::Kind::F32, 0, &a, 1);
  std::vector<float> p(pass.begin(), pass.end());
  file_.append(g + "/pass_at_k", h5::Kind::F32, K, p.data(), 1);
  if (pending_validation_.is_null()) pending_validation_ = json::object();
  std::vector<int64_t> kv(k);
  pending_validation_[set] = {{"avg", std::isfinite(avg) ? json(avg) : json(nullptr)},
                              {"k", kv},
                              {"pass_at_k", floats_json(p)}};
}

void TrainLog::write_layer_selection(const LayerEvidence& e) {
  const std::string g = "/bupo_layer_selection";
  if (file_.has(g + "/ffn_delta_h")) return;  // written once, at step 0
  write_file_atomic(selection_path_, layer_evidence_json(e).dump() + "\n");
  file_.edit_at_flush([g, e](h5::File& f) { write_layer_evidence(f, g, e); });
}

void TrainLog::flush() {
  file_.flush();
}

}  // namespace bupo::rl
