#include "plan/cluster.hpp"

#include <cmath>
#include <fstream>
#include <sstream>

#include "core/error.hpp"
#include "io/toml.hpp"

namespace bupo::plan {

namespace {
double number_at(const toml::table& t, const std::string& file, const std::string& key, double lo,
                 double hi, bool required, double fallback) {
  const toml::node_view<const toml::node> n = t.at_path(key);
  if (!n) {
    BUPO_CHECK(!required, file, ": key '", key, "' is missing (expected a number in [", lo, ", ",
               hi, "])");
    return fallback;
  }
  std::optional<double> v = n.value<double>();
  BUPO_CHECK(v && n.is_number(), file, ": key '", key, "' must be a number");
  BUPO_CHECK(std::isfinite(*v) && *v >= lo && *v <= hi, file, ": key '", key, "' = ", *v,
             ": expected a number in [", lo, ", ", hi, "]");
  return *v;
}

StageCost stage_at(const toml::table& t, const std::string& file, const std::string& name) {
  StageCost s;
  s.efficiency = number_at(t, file, "stages." + name + ".efficiency", 1e-4, 1.0, false, 0.5);
  s.s_per_token = number_at(t, file, "stages." + name + ".s_per_token", 0.0, 1.0, false, 0.0);
  return s;
}
}  // namespace

Cluster load_cluster(const std::string& path) {
  std::ifstream in(path);
  BUPO_CHECK(in.good(), path, ": cannot read the cluster file");
  std::stringstream ss;
  ss << in.rdbuf();
  toml::table t;
  try {
    t = toml::parse(ss.str(), path);
  } catch (const toml::parse_error& e) {
    fail(path, ": not valid TOML: ", e.description(), " (line ", e.source().begin.line, ")");
  } catch (const TomlInternalCheck&) {
    fail(path, ": not valid TOML");
  }
  Cluster c;
  c.file = path;
  c.name = t["name"].value_or(std::string());
  BUPO_CHECK(!c.name.empty(), path, ": key 'name' is missing (expected a string)");
  c.ranks_per_node = static_cast<int>(number_at(t, path, "node.ranks_per_node", 1, 1024, true, 1));
  BUPO_CHECK(c.ranks_per_node == number_at(t, path, "node.ranks_per_node", 1, 1024, true, 1), path,
             ": key 'node.ranks_per_node' must be a whole number");
  c.compute_units = number_at(t, path, "node.compute_units", 1, 1024, false, c.ranks_per_node);
  c.flops = number_at(t, path, "rank.gemm_flops", 1e6, 1e17, true, 0);
  c.mem_bw = number_at(t, path, "rank.mem_bw", 1e6, 1e14, true, 0);
  c.mem_bytes = number_at(t, path, "rank.mem_bytes", 1e6, 1e14, true, 0);
  const double wb = number_at(t, path, "rank.weight_bytes", 2, 4, false, 4);
  BUPO_CHECK(wb == 2 || wb == 4, path, ": key 'rank.weight_bytes' = ", wb,
             ": expected 2 (bf16) or 4 (fp32)");
  c.weight_bytes = static_cast<int>(wb);
  c.intra = {number_at(t, path, "intra_node.alpha_s", 0, 1, true, 0),
             number_at(t, path, "intra_node.beta_Bps", 1e3, 1e14, true, 0)};
  c.inter = {number_at(t, path, "inter_node.alpha_s", 0, 1, true, 0),
             number_at(t, path, "inter_node.beta_Bps", 1e3, 1e14, true, 0)};
  c.prefill = stage_at(t, path, "prefill");
  c.decode = stage_at(t, path, "decode");
  c.logprob = stage_at(t, path, "logprob");
  c.update = stage_at(t, path, "update");
  c.diagnostics = stage_at(t, path, "diagnostics");
  return c;
}

std::string cluster_toml(const Cluster& c, const std::string& note) {
  std::ostringstream o;
  o.precision(6);
  o << "# " << note << "\n";
  o << "name = \"" << c.name << "\"\n\n[node]\nranks_per_node = " << c.ranks_per_node
    << "\ncompute_units = " << c.compute_units << "\n\n[rank]\n"
    << "gemm_flops = " << c.flops << "   # fp32 GEMM 1024^3, this rank's threads\n"
    << "mem_bw = " << c.mem_bw << "   # a 256 MiB copy: bytes read + written per second\n"
    << "mem_bytes = " << c.mem_bytes << "\n"
    << "weight_bytes = " << c.weight_bytes << "\n\n[intra_node]\n"
    << "alpha_s = " << c.intra.alpha_s << "\nbeta_Bps = " << c.intra.beta_Bps
    << "\n\n[inter_node]\nalpha_s = " << c.inter.alpha_s << "\nbeta_Bps = " << c.inter.beta_Bps
    << "\n";
  auto stage = [&](const char* n, const StageCost& s) {
    o << "\n[stages." << n << "]\nefficiency = " << s.efficiency
      << "\ns_per_token = " << s.s_per_token << "\n";
  };
  stage("prefill", c.prefill);
  stage("decode", c.decode);
  stage("logprob", c.logprob);
  stage("update", c.update);
  stage("diagnostics", c.diagnostics);
  return o.str();
}

}  // namespace bupo::plan
