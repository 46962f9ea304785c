// A cluster as bupo plan sees it (configs/clusters/*.toml): what one rank computes and holds, how
// fast two ranks talk inside a node and between nodes (an α–β model per link), and what the
// calibration measured for bupo's own stages. Every number a file gives carries its source.
#pragma once
#include <string>

namespace bupo::plan {

struct Link {
  double alpha_s = 0;   // latency of one collective step / message, seconds
  double beta_Bps = 0;  // bandwidth per rank, bytes/s
};

// What a stage of the step costs beyond its FLOPs at the GEMM rate: the fraction of that rate it
// reaches (compute-bound work, split by TP and PP) and a fixed time per token that TP does not
// split (host-side sampling, packing, per-row kernels; ~0 on a GPU node).
struct StageCost {
  double efficiency = 0.5;
  double s_per_token = 0;
};

struct Cluster {
  std::string name, file;
  int ranks_per_node = 1;    // GPUs (or MPI ranks) per node
  double compute_units = 1;  // ranks of a node that compute at full rate at once (CPU: cores)
  double flops = 0;          // per compute unit: dense GEMM rate, FLOP/s
  double mem_bw = 0;         // per compute unit: memory bandwidth, bytes/s
  double mem_bytes = 0;      // per rank: memory it may use
  int weight_bytes = 4;      // bytes per element of the compute copy (2: bf16, 4: fp32)
  Link intra, inter;
  StageCost prefill, decode, logprob, update, diagnostics;
};

// Reads and checks a cluster file; every error names the file and the key.
Cluster load_cluster(const std::string& path);
// The TOML text of a cluster (what --calibrate writes), with a source line per number.
std::string cluster_toml(const Cluster& c, const std::string& source_note);

}  // namespace bupo::plan
