// bupo — Bottom-up Policy Optimization and internal-policy diagnostics.
#include <CLI/CLI.hpp>
#include <csignal>
#include <cstdio>
#include <map>
#include <memory>

#include "bupo/version.hpp"
#include "cli/commands.hpp"
#include "cli/validators.hpp"
#include "core/error.hpp"
#include "core/threads.hpp"
#include "parallel/mpi_comm.hpp"
#if BUPO_WITH_CUDA
#include "backend/cuda/cuda_backend.hpp"
#endif

int main(int argc, char** argv) {
  // A file-size limit (ulimit -f, some quota setups) makes the write fail with EFBIG, which the
  // writers report naming the file, instead of killing the process mid-file.
  std::signal(SIGXFSZ, SIG_IGN);
#if BUPO_WITH_CUDA
  bupo_register_cuda_backend();  // model.device = "cuda" / --device cuda
#endif
  CLI::App app{
      "bupo: reinforcement learning of language models that sees inside them.\n"
      "Layers are numbered as in the BuPO paper: H^0 is the embedding output, layer l = 1..L\n"
      "writes A^l, F^l and H^l (the reference scripts' 0-based k is l-1)."};
  app.require_subcommand(1);
  int threads = 0;
  app.add_option("--threads", threads,
                 "CPU threads for kernels (0: all cores); results do not depend on it")
      ->check(bupo::cli::integer_in(0, 1024));
  app.set_version_flag("--version", std::string("bupo ") + bupo::kVersion);

  std::map<std::string, bupo::cli::Runner> runners;
  runners.emplace("entropy", bupo::cli::add_entropy(app));
  runners.emplace("init-model", bupo::cli::add_init_model(app));
  runners.emplace("tokenize", bupo::cli::add_tokenize(app));
  runners.emplace("convert", bupo::cli::add_convert(app));
  runners.emplace("generate", bupo::cli::add_generate(app));
  runners.emplace("train", bupo::cli::add_train(app));
  runners.emplace("pick-layer", bupo::cli::add_pick_layer(app));
  runners.emplace("verify", bupo::cli::add_verify(app));
  runners.emplace("plan", bupo::cli::add_plan(app));
  runners.emplace("eval", bupo::cli::add_eval(app));

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help / --version: 0; every bad flag or value: 1, like every other bad input (CLI11's own
    // codes 105-109 read as crashes to job scripts)
    return app.exit(e) == 0 ? 0 : 1;
  }
  // Under mpirun / srun every rank runs this binary; MPI is initialised only then. A rank that
  // fails ends the whole job (MPI_Abort) after naming itself — never a silent hang of the others.
  std::unique_ptr<bupo::MpiSession> mpi;
  auto report = [&](const char* kind, const char* what, int code) {
    if (bupo::world_size() > 1) {
      std::fprintf(stderr, "bupo: %s on %s: %s\n", kind,
                   bupo::rank_name(bupo::world_rank()).c_str(), what);
      bupo::MpiSession::abort_job(code);
    }
    std::fprintf(stderr, "bupo: %s: %s\n", kind, what);
    return code;
  };
  try {
    if (bupo::launched_by_mpi()) mpi = std::make_unique<bupo::MpiSession>(&argc, &argv);
    bupo::set_num_threads(threads);
    for (auto& [name, run] : runners)
      if (app.got_subcommand(name)) return run();
  } catch (const bupo::Error& e) {
    return report("error", e.what(), 1);
  } catch (const std::exception& e) {
    return report("internal error", e.what(), 2);
  }
  return 0;
}
