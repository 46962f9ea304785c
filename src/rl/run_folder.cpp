// The run folder: a fresh start or a resume from the newest complete checkpoint (or an explicit
// one), the diagnostics file (one writer, world rank 0), the warm start and the BuPO layer of a
// fresh run, the KL reference policy; consolidated checkpoints and the final Hugging Face export.
#include <filesystem>
#include <fstream>

#include "io/json_util.hpp"

#include "io/atomic_file.hpp"
#include "model/gather.hpp"
#include "model/gguf_import.hpp"
#include "rl/critic.hpp"
#include "rl/diagnostics.hpp"
#include "rl/run.hpp"

namespace fs = std::filesystem;

namespace bupo::rl {

namespace {
std::string stage_list(const Run& r) {
  std::string o;
  const int L = r.model->num_layers();
  for (int s = 0; s < r.pc.pp_size(); ++s)
    o += (s ? ", " : "") + std::to_string(r.pc.stage_lo(s, L)) + ".." +
         std::to_string(r.pc.stage_hi(s, L));
  return o;
}
// metrics.jsonl records at least one whole step (a complete line with a step number)
bool holds_a_step(const std::string& out_dir) {
  std::ifstream in(fs::path(out_dir) / "metrics.jsonl");
  for (std::string line; std::getline(in, line);) {
    if (in.eof()) break;  // the last line had no newline: torn
    const json j = json::parse(line, nullptr, false);
    if (j.is_object() && j.contains("step")) return true;
  }
  return false;
}

// Resuming with keys that break bit-exactness changed is refused unless --allow-config-change
// (then it is said, and the HDF5 config_history keeps both). "" when the resume may go on.
std::string config_change_refusal(Run& r, const std::string& ck) {
  const fs::path saved = fs::path(ck) / "train_config.toml";
  if (!fs::exists(saved)) {
    r.warn(saved.string() + " is missing: cannot check the config against the checkpoint's");
    return "";
  }
  std::vector<std::string> changes;
  try {
    changes = changes_breaking_bit_exactness(load_train_config(saved.string(), {}), r.cfg);
  } catch (const Error& e) {  // an older version's keys
    r.warn(std::string("cannot compare the config with the checkpoint's: ") + e.what());
    return "";
  }
  if (changes.empty()) return "";
  std::string list;
  for (const auto& c : changes) list += "\n  " + c;
  if (r.opt.allow_config_change) {
    r.warn(
        "resuming with a changed config (--allow-config-change); the continuation is not "
        "bit-identical to the original run:" +
        list);
    return "";
  }
  return saved.string() +
         ": the config differs from the checkpoint's in keys that break "
         "bit-exactness (checkpoint -> now):" +
         list + "\nrestore them, or pass --allow-config-change to continue with the new values";
}
}  // namespace

void open_run_folder(Run& r) {
  const TrainConfig& cfg = r.cfg;
  ParallelContext& pc = r.pc;
  const int64_t L = r.model->num_layers();
  // one owner: the lock comes before anything in the folder is read, removed or written
  if (r.root()) r.lock = FolderLock::acquire(r.out_dir, "bupo train");
  std::string ck = r.opt.resume_from;
  const std::string newest = latest_checkpoint(r.out_dir);
  if (!ck.empty()) {  // --resume-from: that checkpoint must verify (rank 0 reads it, all agree)
    std::string damage = r.root() ? verify_checkpoint(ck) : "";
    int64_t bad = damage.empty() ? 0 : 1;
    pc.world->broadcast(&bad, 8, 0);
    BUPO_CHECK(bad == 0, r.root() ? damage : ck + ": damaged (see rank 0)");
  } else if (r.opt.resume) {  // the newest checkpoint that verifies; say which were damaged
    const auto all = complete_checkpoints(r.out_dir);
    int64_t pick = -1;
    for (size_t i = all.size(); r.root() && i-- > 0 && pick < 0;) {
      const std::string damage = verify_checkpoint(all[i]);
      if (damage.empty())
        pick = static_cast<int64_t>(i);
      else
        r.warn("checkpoint " + all[i] + " is damaged (" + damage + "); trying the one before");
    }
    pc.world->broadcast(&pick, 8, 0);
    BUPO_CHECK(all.empty() || pick >= 0, r.out_dir, ": every checkpoint under ", r.out_dir,
               "/checkpoints is damaged (see above); nothing to resume from");
    if (pick >= 0) ck = all[static_cast<size_t>(pick)];
  }
  const fs::path marker = fs::path(r.out_dir) / kPreemptedMarker;
  // No checkpoint to resume from: a run stopped before step 1 (only the marker), or one killed
  // (kill -9, a lost node) before its first checkpoint. --resume starts it afresh, so that a
  // requeued job goes on; the steps it had logged cannot be continued and are kept aside.
  const bool restart = r.opt.resume && ck.empty() && r.opt.resume_from.empty();
  if (restart) {
    r.opt.resume = false;
    r.opt.overwrite = true;
    std::string aside;
    if (r.root() && holds_a_step(r.out_dir))
      for (const char* name : {"metrics.jsonl", "diagnostics.h5"}) {
        const fs::path p = fs::path(r.out_dir) / name;
        if (!fs::exists(p)) continue;
        fs::path to = p.string() + ".abandoned";
        for (int i = 1; fs::exists(to); ++i) to = p.string() + ".abandoned." + std::to_string(i);
        fs::rename(p, to);
        aside += (aside.empty() ? "" : ", ") + to.filename().string();
      }
    const std::string why =
        fs::exists(marker) ? "no checkpoint yet (the run was stopped before step 1): starting it "
                             "afresh"
                           : "no checkpoint under " + r.out_dir + "/checkpoints: starting afresh";
    if (aside.empty())
      r.say(why);
    else
      r.warn(why + " (the steps logged without a checkpoint are kept in " + aside + ")");
  }
  const bool resuming = !ck.empty();
  if (resuming) {  // the checkpoint's config against this one: rank 0 compares, all agree
    std::string refusal = r.root() ? config_change_refusal(r, ck) : "";
    int64_t bad = refusal.empty() ? 0 : 1;
    pc.world->broadcast(&bad, 8, 0);
    BUPO_CHECK(bad == 0, r.root() ? refusal : ck + ": config differs (see rank 0)");
  }
  if (r.root()) remove_partial_checkpoints(r.out_dir);  // left by a kill or a failed write
  if (r.root() && !r.opt.overwrite) {
    // a fresh run would prune and overwrite an earlier run's checkpoints; --resume-from another
    // checkpoint would discard this folder's later ones and truncate its logs
    BUPO_CHECK(resuming || newest.empty(), r.out_dir, ": holds checkpoints of an earlier run (",
               newest, "); pass --resume to continue it or --overwrite to start again");
    const bool holds_run = !newest.empty() || fs::exists(fs::path(r.out_dir) / "metrics.jsonl");
    std::error_code ec;
    BUPO_CHECK(r.opt.resume_from.empty() || !holds_run ||
                   (!newest.empty() && fs::equivalent(r.opt.resume_from, newest, ec)),
               r.out_dir, ": --resume-from ", r.opt.resume_from,
               " into a folder that holds a run would discard its later checkpoints and truncate "
               "its logs; pass --overwrite to do that, or choose another trainer.out_dir");
  }
  if (!resuming && r.opt.overwrite && r.root()) {  // a fresh run: stale checkpoints never resume
    fs::remove_all(fs::path(r.out_dir) / "checkpoints");
    fs::remove_all(fs::path(r.out_dir) / "hf");
  }
  pc.world->barrier();
  if (r.root() && fs::exists(marker)) fs::remove(marker);
  if (r.stop_requested_everywhere()) return r.stop_before_start("loading");
  if (resuming) {
    load_checkpoint(ck, *r.model, *r.optim, r.st, r.critic.get(), r.critic_optim.get());
    r.sampler->set_state(r.st.sampler);
    pc.world->barrier();  // every rank has read it before rank 0 prunes
    if (r.root()) discard_checkpoints_after(r.out_dir, r.st.step);  // an abandoned continuation
    r.say("resumed from " + ck + " (step " + std::to_string(r.st.step) + ")");
  }
  if (r.root())  // one writer: world rank 0
    r.log = std::make_unique<TrainLog>((fs::path(r.out_dir) / "diagnostics.h5").string(),
                                       (fs::path(r.out_dir) / "metrics.jsonl").string(),
                                       static_cast<int>(L), cfg.to_toml(), resuming, r.st.step,
                                       r.opt.overwrite);
  if (r.log)
    for (const auto& note : r.log->notes()) r.warn(note);
  if (pc.world->size() > 1)
    r.say("parallel layout: tp " + std::to_string(pc.tp_size()) + " x pp " +
          std::to_string(pc.pp_size()) + " x dp " + std::to_string(pc.dp_size()) + " = " +
          std::to_string(pc.world->size()) + " ranks (MPI); stage layers " + stage_list(r));
  if (!resuming) {
    if (cfg.warmup.sft_steps > 0) warm_start(r);
    if (r.stopped_before_start) return;
    if (cfg.bupo.auto_layer) pick_bupo_layer(r);
    if (r.stop_requested_everywhere()) return r.stop_before_start("the BuPO layer pick");
    init_critic(r);  // PPO's value model starts from the warm-started policy (or critic.model)
  }
  if (cfg.algorithm.kl_coef > 0) {  // the reference policy: the initial (post warm-start) model
    r.ref = std::make_unique<Model>(r.model->config(), pc, *r.backend);
    if (resuming || cfg.model.path.empty()) {
      BUPO_CHECK(!resuming || !cfg.model.path.empty(), cfg.source,
                 ": resuming a KL-regularised run of a fresh model: the reference weights are not "
                 "stored; start such runs from a checkpoint folder (model.path)");
      r.ref->params().copy_weights_from(r.model->params());
    } else {
      auto loaded = load_model(cfg.model.path, pc, *r.backend);
      r.ref->params().copy_weights_from(loaded->params());
    }
  }
}

// Checkpoints hold the consolidated (single-rank) model and optimizer state, written by world
// rank 0, so a run resumes under any layout.
void write_checkpoint(Run& r) {
  r.st.sampler = r.sampler->state();
  const auto t0 = Clock::now();
  std::string dir;
  const TrainConfig& cfg = r.cfg;
  if (r.pc.world->size() == 1) {
    const CheckpointCritic critic{r.critic.get(), r.critic_optim.get()};
    dir = save_checkpoint(r.out_dir, *r.model, *r.optim, r.st, cfg.to_toml(), r.tok_json,
                          cfg.trainer.keep_checkpoints, r.critic ? &critic : nullptr);
  } else {
    // the whole model and its optimizer state on world rank 0 (nullptr elsewhere)
    struct Full {
      std::unique_ptr<Model> model;
      std::unique_ptr<AdamW> opt;
    };
    auto gather = [](Model& m, const AdamW& o) {
      std::vector<int64_t> full_steps;
      std::vector<std::vector<float>> moments;
      const std::vector<float> m1 = o.exp_avg_to_host(), m2 = o.exp_avg_sq_to_host();
      Full f;
      f.model = gather_model(m, {&m1, &m2}, &moments, &o.step_counts(), &full_steps);
      if (f.model) {
        f.opt = std::make_unique<AdamW>(f.model->params(), o.config());
        f.opt->moments_from_host(moments[0], moments[1]);
        f.opt->set_step_counts(full_steps);
      }
      return f;
    };
    const Full policy = gather(*r.model, *r.optim);
    const Full critic = r.critic ? gather(*r.critic, *r.critic_optim) : Full{};
    if (policy.model) {
      const CheckpointCritic cc{critic.model.get(), critic.opt.get()};
      dir = save_checkpoint(r.out_dir, *policy.model, *policy.opt, r.st, cfg.to_toml(), r.tok_json,
                            cfg.trainer.keep_checkpoints, r.critic ? &cc : nullptr);
    }
    r.pc.world->barrier();  // the checkpoint is complete before any rank goes on or exits
  }
  r.say("checkpoint " + dir + " (" + std::to_string(seconds_since(t0)).substr(0, 5) + " s)");
}

void export_final_model(Run& r) {
  const std::string hf = (fs::path(r.out_dir) / "hf").string();
  std::unique_ptr<Model> full =
      r.pc.world->size() > 1 ? gather_model(*r.model, {}, nullptr, nullptr, nullptr) : nullptr;
  if (r.root()) {
    (full ? *full : *r.model).save(hf, DType::F32);
    write_file_atomic((fs::path(hf) / "tokenizer.json").string(), r.tok_json);
  }
  r.say("final model (Hugging Face format): " + hf);
}

}  // namespace bupo::rl
