// Subcommands of the `bupo` CLI; each registers its options on the app and returns the function
// that runs it.
#pragma once
#include <CLI/CLI.hpp>
#include <functional>
#include <string>

namespace bupo::cli {
using Runner = std::function<int()>;
// An output folder is new, empty, or replaced only with --overwrite (never a file).
void require_new_folder(const std::string& dir, bool overwrite);
Runner add_entropy(CLI::App& app);
Runner add_init_model(CLI::App& app);
Runner add_tokenize(CLI::App& app);
Runner add_convert(CLI::App& app);
Runner add_generate(CLI::App& app);
Runner add_train(CLI::App& app);
Runner add_pick_layer(CLI::App& app);
Runner add_verify(CLI::App& app);
Runner add_plan(CLI::App& app);
Runner add_eval(CLI::App& app);
}  // namespace bupo::cli
