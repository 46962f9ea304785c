#include "rl/evaluation.hpp"

#include <unistd.h>

#include <cstdio>
#include <filesystem>

#include "bupo/version.hpp"
#include "core/error.hpp"
#include "core/utc.hpp"
#include "io/h5_append.hpp"
#include "io/json_util.hpp"
#include "model/gguf_import.hpp"
#include "parallel/mpi_comm.hpp"
#include "parallel/topology.hpp"
#include "rl/run.hpp"

namespace fs = std::filesystem;

namespace bupo::rl {

bool is_checkpoint_folder(const std::string& path) {
  std::error_code ec;
  const fs::path d(path);
  return fs::is_directory(d, ec) && fs::is_regular_file(d / "state.json", ec) &&
         fs::is_regular_file(d / "train_config.toml", ec);
}

namespace {

// The configuration the sets are scored with: --config, else the checkpoint's own, else the
// defaults; then the overrides; the model is always --model.
TrainConfig eval_config(const EvalOptions& o, bool checkpoint) {
  std::string src = o.config;
  if (src.empty() && checkpoint) src = (fs::path(o.model) / "train_config.toml").string();
  // validation.every is training's schedule: here every set is scored once
  // (and the model is --model's before the config is checked: an evaluation config names none)
  std::vector<std::string> ov = {"validation.every=0", "model.init.layers=0",
                                 "model.path=" + json(o.model).dump()};
  ov.insert(ov.end(), o.overrides.begin(), o.overrides.end());
  // the tokenizer is --tokenizer's or the model's own (a checkpoint holds its tokenizer.json)
  ov.push_back("model.tokenizer=" + json(o.tokenizer).dump());
  if (!o.device.empty()) ov.push_back("model.device=" + json(o.device).dump());
  return src.empty() ? parse_train_config("", "", ov, ConfigUse::Evaluate)
                     : load_train_config(src, ov, ConfigUse::Evaluate);
}

int64_t checkpoint_step(const std::string& dir) {
  const std::string sp = (fs::path(dir) / "state.json").string();
  const json j = read_json_file(sp);
  BUPO_CHECK(j.is_object() && j.contains("step") && j["step"].is_number_integer() &&
                 j["step"].get<int64_t>() >= 0,
             sp, ": field 'step': expected a non-negative integer");
  return j["step"].get<int64_t>();
}

void write_set(h5::AppendFile& file, const ValidationResult& v, int64_t step,
               const std::string& source) {
  const ValidationSetting& s = v.setting;
  const std::string g = "/validation/" + s.name;
  const auto K = static_cast<int64_t>(s.k.size());
  const int64_t P = s.prompts;
  file.edit_at_flush([=](h5::File& f) {
    h5::create_rows(f.id(), g + "/step", h5::Kind::I64, 0, 16,
                    "training step of the model scored (the checkpoint's, or --step)");
    h5::create_rows(f.id(), g + "/avg", h5::Kind::F32, 0, 16,
                    "avg@n: the mean over prompts of correct samples / n");
    h5::create_rows(f.id(), g + "/pass_at_k", h5::Kind::F32, K, 16,
                    "unbiased pass@k (1 - C(n-c, k)/C(n, k), mean over prompts) for attribute k");
    h5::create_rows(f.id(), g + "/correct", h5::Kind::I64, P, 16,
                    "correct samples of n for each prompt, in the set's order");
    f.set_attr(g + "/pass_at_k", "k", k_attribute(s.k));
    f.set_attr(g + "/avg", "n", s.n);
    f.set_attr(g + "/avg", "temperature", s.temperature);
    f.set_attr(g + "/avg", "top_p", s.top_p);
    f.set_attr(g + "/avg", "max_tokens", s.max_tokens);
    f.set_attr(g + "/avg", "prompts", P);
    f.set_attr(g + "/avg", "source", source);
  });
  file.append(g + "/step", h5::Kind::I64, 0, &step, 1);
  const auto a = static_cast<float>(v.avg);
  file.append(g + "/avg", h5::Kind::F32, 0, &a, 1);
  const std::vector<float> p(v.pass.begin(), v.pass.end());
  file.append(g + "/pass_at_k", h5::Kind::F32, K, p.data(), 1);
  file.append(g + "/correct", h5::Kind::I64, P, v.correct.data(), 1);
}

// What is at `out` already: nothing, a bupo-eval file complete or not, or something else.
enum class Existing { None, Complete, Incomplete, Foreign };
Existing existing_output(const std::string& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return Existing::None;
  try {
    const h5::File f = h5::File::open_read(path);
    if (!h5::attr_exists(f.id(), "/", "schema") ||
        h5::read_attr_string(f.id(), "/", "schema") != "bupo-eval")
      return Existing::Foreign;
    return h5::attr_exists(f.id(), "/", "complete") &&
                   h5::read_attr_int(f.id(), "/", "complete") == 1
               ? Existing::Complete
               : Existing::Incomplete;
  } catch (const Error&) {
    return Existing::Foreign;  // not HDF5, or unreadable: never replaced without --overwrite
  }
}

}  // namespace

EvalReport evaluate(const EvalOptions& o) {
  BUPO_CHECK(!o.model.empty(), "bupo eval: --model is required");
  BUPO_CHECK(!o.out.empty(), "bupo eval: --out is required");
  std::error_code ec;
  BUPO_CHECK(fs::exists(o.model, ec), "bupo eval: --model '", o.model, "': no such file or folder");
  EvalReport rep;
  rep.checkpoint = is_checkpoint_folder(o.model);
  const bool single = !MpiSession::active() || o.single_process;
  const bool root = single || world_rank() == 0;
  const Existing before = o.skip_complete ? existing_output(o.out) : Existing::None;
  if (before == Existing::Complete) {  // every rank reads the same answer
    rep.skipped = true;
    if (!o.quiet && root)
      std::fprintf(stderr, "bupo eval: %s is already complete: nothing to do\n", o.out.c_str());
    return rep;
  }
  // an existing file is refused before the model is read (minutes for a large one)
  BUPO_CHECK(
      !root || o.overwrite || before == Existing::Incomplete || !fs::exists(o.out, ec), o.out,
      ": output file exists; refusing to overwrite it (pass --overwrite",
      o.skip_complete ? "; --skip-complete replaces only an incomplete bupo-eval file)" : ")");
  if (rep.checkpoint && root) {  // once, on one rank (a large model's files are read whole)
    const std::string why = verify_checkpoint(o.model);
    BUPO_CHECK(why.empty(), "bupo eval: ", why);
  }
  rep.step = o.step >= 0 ? o.step : rep.checkpoint ? checkpoint_step(o.model) : 0;

  Run r;
  r.cfg = eval_config(o, rep.checkpoint);
  const TrainConfig& cfg = r.cfg;
  const std::string where = cfg.source.empty() ? std::string("bupo eval") : cfg.source;
  BUPO_CHECK(!cfg.validation.sets.empty(), "bupo eval: no sets to score: give --sets",
             cfg.source.empty() ? std::string() : " (" + cfg.source + " has no validation.sets)");
  r.opt.quiet = o.quiet;
  r.opt.single_process = o.single_process;
  r.tty = isatty(fileno(stderr)) != 0;
  r.scoring = parse_scoring(cfg.algorithm.grader, cfg.reward.mode);
  r.backend = &backend_for(cfg.model.device, where + ": key 'model.device'", cfg.model.precision);

  // the tokenizer, the shape, the layout (tp × pp from the config, dp the rest), then the shard
  load_tokenizer_of(r);
  const ModelConfig mc = model_shape(r);
  const int world = single ? 1 : world_size();
  ParallelLayout lay;
  lay.tp = static_cast<int>(cfg.parallel.tp);
  lay.pp = static_cast<int>(cfg.parallel.pp);
  BUPO_CHECK(world % (lay.tp * lay.pp) == 0, "bupo eval: --tp ", lay.tp, " × --pp ", lay.pp,
             " does not divide the job's ", world, " ranks");
  lay.dp = world / (lay.tp * lay.pp);
  validate_layout(lay, world, mc, "bupo eval");
  r.pc = make_parallel_context(lay, static_cast<int>(mc.num_layers), "bupo eval")
             .with_device_comms(*r.backend, cfg.parallel.timeout_s);
  set_comm_timeout(cfg.parallel.timeout_s);
  r.model = load_model(cfg.model.path, r.pc, *r.backend);
  BUPO_CHECK(r.model->config().vocab_size >= r.tok->vocab_size(), o.model, ": the tokenizer has ",
             r.tok->vocab_size(), " tokens but the model's vocabulary only ",
             r.model->config().vocab_size);
  for (const auto& v : cfg.validation.sets) {
    r.val.push_back(load_validation_set(r, v));
    BUPO_CHECK(r.val.back()->size() > 0, v, ": no prompts to score");
  }

  // the output, before any generation: an existing file is refused without --overwrite
  h5::AppendFile file;
  if (r.root())
    file = h5::AppendFile::create(o.out, o.overwrite || before == Existing::Incomplete,
                                  [&](h5::File& f) {
                                    f.set_attr("/", "schema", std::string("bupo-eval"));
                                    f.set_attr("/", "schema_version", int64_t{1});
                                    f.set_attr("/", "program_version", std::string(kVersion));
                                    f.set_attr("/", "created_utc", utc_now());
                                    f.set_attr("/", "model_path", o.model);
                                    f.set_attr("/", "step", rep.step);
                                    f.set_attr("/", "checkpoint", int64_t{rep.checkpoint ? 1 : 0});
                                    f.set_attr("/", "config", cfg.to_toml());
                                    f.set_attr("/", "complete", int64_t{0});
                                  });
  r.say("bupo eval: " + o.model + " (step " + std::to_string(rep.step) + ") on " +
        std::to_string(r.val.size()) + " set(s), layout tp " + std::to_string(lay.tp) + " × pp " +
        std::to_string(lay.pp) + " × dp " + std::to_string(lay.dp));
  for (size_t i = 0; i < r.val.size(); ++i) {
    ValidationResult v = validate_set(r, i);
    if (r.root()) {
      write_set(file, v, rep.step, cfg.validation.sets[i]);
      file.flush();
    }
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.4f", v.avg);
    std::string line = v.setting.name + ": avg@" + std::to_string(v.setting.n) + " " + buf;
    for (size_t k = 0; k < v.setting.k.size(); ++k) {
      std::snprintf(buf, sizeof buf, "%.4f", v.pass[k]);
      line += ", pass@" + std::to_string(v.setting.k[k]) + " " + buf;
    }
    std::snprintf(buf, sizeof buf, " (%lld prompts, T = %g)",
                  static_cast<long long>(v.setting.prompts), v.setting.temperature);
    r.say(line + buf);
    rep.sets.push_back(std::move(v));
  }
  if (r.root()) {
    file.update_attr("/", "complete", 1);
    file.flush();
  }
  return rep;
}

}  // namespace bupo::rl
