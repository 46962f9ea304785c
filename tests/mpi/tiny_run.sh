# Sourced by the MPI shell checks: tiny_run_config FILE OUT_DIR STEPS PARALLEL_TOML writes the run
# configuration they share (a 2-layer Qwen3 on 1-digit sums, two pipeline stages, no periodic
# checkpoints) with PARALLEL_TOML's keys added to its [parallel] table.
tiny_run_config() {
  cat > "$1" <<TOML
[model]
template = "plain"
init = { arch = "qwen3", layers = 2, hidden = 32, heads = 2, kv_heads = 1, head_dim = 16, ffn = 64, vocab_multiple = 8 }
[data]
train = "builtin:arithmetic"
arithmetic = { digits = 1, ops = "+", size = 50 }
[rollout]
n = 2
max_tokens = 4
[trainer]
steps = $3
prompts_per_step = 2
mini_batch_prompts = 2
micro_batch_seqs = 2
checkpoint_every = 0
out_dir = "$2"
[parallel]
pp = 2
$4
TOML
}
