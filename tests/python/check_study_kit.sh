#!/usr/bin/env bash
# The multi-seed study kit end to end on a tiny model (ctest: python.study_kit):
# jobs/experiments/study.py runs 2 variants x 3 seeds, a re-run skips them all, and
# analysis/compare.py reads the folder: its paired statistics (the t quantile, the sign-flip p)
# against values computed by hand, the table, the phase-1 dynamics and the figures.
#   check_study_kit.sh BUPO PYTHON
set -uo pipefail
bupo=$1 python=$2
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
"$python" -c "import h5py, matplotlib" 2>/dev/null || { echo "skip: h5py/matplotlib missing"; exit 77; }
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
cat >"$dir/tiny.toml" <<TOML
[model]
template = "plain"
init = { arch = "qwen3", layers = 2, hidden = 32, heads = 2, kv_heads = 1, head_dim = 16, ffn = 64, vocab_multiple = 8 }
[data]
train = "builtin:arithmetic"
arithmetic = { digits = 1, ops = "+", size = 50 }
[warmup]
sft_steps = 100
sft_batch = 16
sft_lr = 3e-3
[rollout]
n = 4
max_tokens = 12
[trainer]
steps = 4
prompts_per_step = 4
mini_batch_prompts = 4
micro_batch_seqs = 8
checkpoint_every = 0
export_hf = false
out_dir = "$dir/unused"
[optim]
lr = 1e-3
[bupo]
internal_layer = 1
internal_steps = 2
[diagnostics]
every = 1
tokens = 24
geometry = true
[validation]
every = 2
sets = ["builtin:arithmetic"]
n = 2
k = [1, 2]
max_prompts = 8
TOML
study=("$python" "$root/jobs/experiments/study.py" --study "$dir/study" --config "$dir/tiny.toml"
       --bupo "$bupo" --variants grpo,bupo --seeds 1,2,3 --jobs 2)
"${study[@]}" >"$dir/first.log" 2>&1 || { cat "$dir/first.log"; echo "FAIL: the study exited $?"; exit 1; }
grep -q "study: 0 done, 6 to run" "$dir/first.log" || { cat "$dir/first.log"; echo "FAIL: expected 6 runs"; exit 1; }
"${study[@]}" >"$dir/second.log" 2>&1
grep -q "study: 6 done, 0 to run" "$dir/second.log" ||
  { cat "$dir/second.log"; echo "FAIL: the re-run did not find the 6 runs finished"; exit 1; }
"$python" - "$root/analysis" <<'PY' || { echo "FAIL: compare.py's statistics"; exit 1; }
import sys
sys.path.insert(0, sys.argv[1])
import compare as c
assert abs(c.t_quantile_975(4) - 2.776445) < 1e-5 and abs(c.t_quantile_975(1) - 12.706205) < 1e-5
assert abs(c.t_two_sided_p(2.776445, 4) - 0.05) < 1e-6
m, ci, p_t, p_flip, n = c.paired({1: 0.5, 2: 0.6, 3: 0.55, 4: 0.52, 5: 0.58}, {s: 0.5 for s in range(1, 6)})
# differences 0, .1, .05, .02, .08: mean .05, s = .04123, t = 2.712 (df 4): p = .0534; of the 32
# sign patterns 4 reach |sum| >= .25 (+-all, and the zero difference either way)
assert abs(m - 0.05) < 1e-12 and abs(p_t - 0.0534) < 5e-4 and abs(p_flip - 4 / 32) < 1e-12, (m, p_t, p_flip)
PY
"$python" "$root/analysis/compare.py" "$dir/study" --out "$dir/figs" >"$dir/compare.log" 2>&1 ||
  { cat "$dir/compare.log"; echo "FAIL: compare.py exited $?"; exit 1; }
cat "$dir/compare.log"
grep -Eq "^bupo +3 " "$dir/compare.log" && grep -Eq "^grpo +3 " "$dir/compare.log" ||
  { echo "FAIL: the table lacks a variant with its 3 seeds"; exit 1; }
grep -q "bupo (pi^1, steps 1..2) vs grpo over the same steps" "$dir/compare.log" &&
  grep -q "cos(H^1, H^2)" "$dir/compare.log" || { echo "FAIL: no phase-1 dynamics"; exit 1; }
# phase 1 trains pi^1 alone, phase 2 the full policy: BuPO's runs are not GRPO's, and a seed is one
# initialisation and warm start for every variant (the comparison is paired)
"$python" - "$dir/study" <<'PY' || { echo "FAIL: the runs are not what the study asked for"; exit 1; }
import sys, h5py, numpy as np
d = sys.argv[1]
differ = False
for s in (1, 2, 3):
    g, b = (h5py.File(f"{d}/{v}/seed_{s}/diagnostics.h5", "r") for v in ("grpo", "bupo"))
    assert list(b["steps/phase"][:]) == [1, 1, 2, 2] and list(g["steps/phase"][:]) == [2, 2, 2, 2]
    assert g["steps/reward"][0] == b["steps/reward"][0], s  # the same warm start, the same first rollouts
    differ |= not np.array_equal(g["steps/grad_norm"][:], b["steps/grad_norm"][:])
assert differ
PY
for f in compare_validation compare_reward compare_layers; do
  [ -s "$dir/figs/$f.png" ] || { echo "FAIL: no $f.png"; exit 1; }
done
echo "study kit: 6 runs, skipped on a re-run; compare.py's table, dynamics and figures"
