// `bupo entropy` end to end through the real binary: the HDF5 schema, the t-1 position mapping
// against the library lens, and bad inputs that must give one clear error and a non-zero exit.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "../test_util.hpp"
#include "io/h5.hpp"
#include "lens/entropy_analysis.hpp"
#include "model_fixture.hpp"

namespace bupo {
namespace {
namespace fs = std::filesystem;

test::RunResult run(const std::string& args) {
  return test::run_bupo(args);
}

class EntropyCommand : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = test::temp_dir("e");
    model_ = dir_ + "/model";
    auto m = test::tiny_model(Arch::Qwen3, true);
    m->save(model_, DType::F32);
    data_ = dir_ + "/data.jsonl";
    std::ofstream(data_)
        << "{\"ids\": [1, 5, 9, 33, 2, 60, 7], \"response_start\": 4}\n"
        << "\n"  // blank lines are skipped
        << "{\"ids\": [4, 4, 18, 50, 11], \"response_start\": 1}\n"
        << "{\"ids\": [8, 9], \"response_start\": 2}\n";  // empty response: no rows
  }
  std::string dir_, model_, data_;
};

TEST_F(EntropyCommand, WritesTheDocumentedSchema) {
  const std::string out = dir_ + "/e.h5";
  const auto r =
      run("entropy --model " + model_ + " --data " + data_ + " --out " + out + " --batch-tokens 8");
  ASSERT_EQ(r.code, 0) << r.output;
  auto f = h5::File::open_read(out);
  const int64_t L = 4, N = 3 + 4 + 0;
  EXPECT_EQ(h5::dataset_shape(f.id(), "/tokens/record"), (std::vector<int64_t>{N}));
  EXPECT_EQ(h5::dataset_shape(f.id(), "/tokens/position"), (std::vector<int64_t>{N}));
  EXPECT_EQ(h5::dataset_shape(f.id(), "/tokens/token_id"), (std::vector<int64_t>{N}));
  EXPECT_EQ(h5::dataset_shape(f.id(), "/entropy/layer"), (std::vector<int64_t>{N, L + 1}));
  for (const char* m : {"attn_in", "attn_out", "ffn_in", "ffn_out"}) {
    EXPECT_EQ(h5::dataset_shape(f.id(), std::string("/entropy/") + m),
              (std::vector<int64_t>{N, L}));
    EXPECT_EQ(h5::dataset_shape(f.id(), std::string("/logprob/") + m),
              (std::vector<int64_t>{N, L}));
  }
  EXPECT_EQ(h5::dataset_shape(f.id(), "/entropy/output"), (std::vector<int64_t>{N}));
  EXPECT_EQ(h5::read_i64(f.id(), "/tokens/record"), (std::vector<int64_t>{0, 0, 0, 1, 1, 1, 1}));
  EXPECT_EQ(h5::read_i64(f.id(), "/tokens/position"), (std::vector<int64_t>{4, 5, 6, 1, 2, 3, 4}));
  EXPECT_EQ(h5::read_i64(f.id(), "/tokens/token_id"),
            (std::vector<int64_t>{2, 60, 7, 4, 18, 50, 11}));
  EXPECT_EQ(h5::read_attr_string(f.id(), "/", "architecture"), "Qwen3ForCausalLM");
  EXPECT_EQ(h5::read_attr_string(f.id(), "/", "lens"), "raw");
  EXPECT_EQ(h5::read_attr_string(f.id(), "/", "model_path"), model_);
  EXPECT_FALSE(h5::read_attr_string(f.id(), "/", "program_version").empty());
  EXPECT_EQ(h5::read_attr_int(f.id(), "/", "num_layers"), L);
  EXPECT_EQ(h5::read_attr_int(f.id(), "/", "vocab_size"), 64);
  // schema 3 (2 + the Fig. 5/12 geometry): the datasets are created at their full size;
  // /progress says how many rows are final
  EXPECT_EQ(h5::read_attr_int(f.id(), "/", "schema_version"), 3);
  EXPECT_EQ(h5::read_attr_int(f.id(), "/", "geometry"), 1);
  EXPECT_EQ(h5::dataset_shape(f.id(), "/geometry/cos_to_top"), (std::vector<int64_t>{N, L + 1}));
  EXPECT_EQ(h5::dataset_shape(f.id(), "/kl/layer_to_output"), (std::vector<int64_t>{N, L + 1}));
  EXPECT_EQ(h5::dataset_shape(f.id(), "/geometry/cos_attn_residual"), (std::vector<int64_t>{N, L}));
  EXPECT_EQ(h5::dataset_shape(f.id(), "/geometry/cos_ffn_residual"), (std::vector<int64_t>{N, L}));
  EXPECT_EQ(h5::read_i64(f.id(), "/progress"), (std::vector<int64_t>{N, 3}));
  EXPECT_EQ(h5::read_attr_int(f.id(), "/", "num_tokens"), N);
  EXPECT_EQ(h5::read_attr_int(f.id(), "/", "num_records"), 3);
  for (float h : h5::read_f32(f.id(), "/entropy/layer")) {
    EXPECT_GE(h, 0.0f);
    EXPECT_LE(h, std::log(64.0f) + 1e-5f);
  }
}

TEST_F(EntropyCommand, RowsAreReadAtPositionTMinusOne) {
  const std::string out = dir_ + "/e.h5";
  ASSERT_EQ(
      run("entropy --model " + model_ + " --data " + data_ + " --out " + out + " --lens normed")
          .code,
      0);
  auto f = h5::File::open_read(out);
  const auto layer = h5::read_f32(f.id(), "/entropy/layer");
  const auto ffn_out = h5::read_f32(f.id(), "/entropy/ffn_out");
  const auto output = h5::read_f32(f.id(), "/entropy/output");
  const auto lp_out = h5::read_f32(f.id(), "/logprob/output");
  // Recompute record 1 (ids 4 4 18 50 11, s=1) directly: row j is position t = 1 + j, hidden t-1.
  auto m = Model::load(model_, ParallelContext::single());
  const Batch b = Batch::from_sequences({{4, 4, 18, 50, 11}});
  Activations acts;
  std::vector<float> h2, f3;
  const TapFn tap = [&](const LayerTaps& t) {
    if (t.layer == 2) h2.assign(t.h_out.f32(), t.h_out.f32() + b.N() * m->hidden());
    if (t.layer == 3) f3.assign(t.ffn_out.f32(), t.ffn_out.f32() + b.N() * m->hidden());
  };
  m->forward(b, acts, false, -1, &tap);
  Lens normed{&m->unembedding(), &m->final_norm(), LensMode::Normed,
              static_cast<float>(m->config().rms_norm_eps)};
  Lens raw{&m->unembedding(), nullptr, LensMode::Raw};
  const int64_t d = m->hidden();
  for (int64_t j = 0; j < 4; ++j) {
    const int64_t row = 3 + j, pos = j;  // record 0 contributes rows 0..2
    const int32_t tgt = b.ids[pos + 1];
    float e = 0, lp = 0;
    normed.forward(Tensor::host(h2.data() + pos * d, {1, d}), nullptr, &e, nullptr);
    EXPECT_NEAR(layer[row * 5 + 2], e, 1e-5);
    normed.forward(Tensor::host(f3.data() + pos * d, {1, d}), nullptr, &e, nullptr);
    EXPECT_NEAR(ffn_out[row * 4 + 2], e, 1e-5);
    raw.forward(acts.final_out.rows(pos, 1), &tgt, &e, &lp);
    EXPECT_NEAR(output[row], e, 1e-5);
    EXPECT_NEAR(lp_out[row], lp, 1e-5);
  }
  // normed lens at H^L is the output policy
  for (int64_t row = 0; row < 7; ++row) EXPECT_NEAR(layer[row * 5 + 4], output[row], 1e-5);
}

TEST_F(EntropyCommand, RefusesToOverwriteAndKeepsTheExistingFile) {
  const std::string out = dir_ + "/keep.h5";
  std::ofstream(out) << "precious";
  const auto r = run("entropy --model " + model_ + " --data " + data_ + " --out " + out);
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("refusing to overwrite"), std::string::npos) << r.output;
  std::ifstream in(out);
  std::string s;
  in >> s;
  EXPECT_EQ(s, "precious");
}

struct BadCase {
  std::string name, data, expect;
};

TEST_F(EntropyCommand, ADiskTooSmallForTheFileFailsBeforeAnyWork) {
  // the file is created at its full size (its rows are known up front): a 2 KiB file-size limit,
  // as a full disk, is one error naming the output; nothing is left under its name
  const std::string out = dir_ + "/small.h5";
  const auto r =
      test::run_shell("trap '' XFSZ; ulimit -f 2; " + std::string(BUPO_BINARY) +
                      " entropy --model " + model_ + " --data " + data_ + " --out " + out);
  EXPECT_EQ(r.code, 1) << r.output;
  EXPECT_NE(r.output.find(out), std::string::npos) << r.output;
  EXPECT_FALSE(fs::exists(out));
}

TEST_F(EntropyCommand, BadDataRowsGiveOneClearError) {
  const std::vector<BadCase> cases = {
      {"oov",
       "{\"ids\": [1, 2, 3], \"response_start\": 1}\n{\"ids\": [1, 64, 3], \"response_start\": "
       "1}\n",
       "data.jsonl:2: field 'ids'[1] = 64 is outside the vocabulary [0, 64)"},
      {"negative", "{\"ids\": [1, -3], \"response_start\": 1}\n",
       "field 'ids'[1] = -3 is outside the vocabulary"},
      {"start0", "{\"ids\": [1, 2, 3], \"response_start\": 0}\n",
       "data.jsonl:1: field 'response_start' = 0 is out of range"},
      {"start_big", "{\"ids\": [1, 2, 3], \"response_start\": 4}\n",
       "field 'response_start' = 4 is out of range"},
      {"no_start", "{\"ids\": [1, 2, 3]}\n", "field 'response_start' is missing"},
      {"malformed", "{\"ids\": [1, 2, 3], \"response_start\": 1}\n{\"ids\": [1,\n",
       "data.jsonl:2: malformed JSON"},
      {"not_ints", "{\"ids\": [1, \"x\"], \"response_start\": 1}\n",
       "field 'ids'[1]: expected an integer"},
      {"empty", "\n\n", "no data rows"},
      {"huge_number", "{\"ids\": [1, 1e999], \"response_start\": 1}\n",
       "data.jsonl:1: invalid JSON"},
      {"text", "{\"prompt\": \"hi\", \"response\": \"x\"}\n", "text rows need a tokenizer"},
  };
  for (const auto& c : cases) {
    const std::string data = dir_ + "/data.jsonl";
    std::ofstream(data) << c.data;
    const std::string out = dir_ + "/" + c.name + ".h5";
    const auto r = run("entropy --model " + model_ + " --data " + data + " --out " + out);
    EXPECT_EQ(r.code, 1) << c.name << ": " << r.output;
    EXPECT_NE(r.output.find(c.expect), std::string::npos) << c.name << ": " << r.output;
    EXPECT_EQ(std::count(r.output.begin(), r.output.end(), '\n'), 1)
        << c.name << ": one line expected: " << r.output;
    EXPECT_FALSE(fs::exists(out)) << c.name << ": no output file for invalid data";
  }
}

TEST_F(EntropyCommand, BadModelFilesGiveOneClearError) {
  const std::string out = dir_ + "/x.h5";
  auto r = run("entropy --model " + dir_ + "/nothing --data " + data_ + " --out " + out);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find("no config.json"), std::string::npos) << r.output;
  std::ofstream(model_ + "/config.json") << "{\"architectures\": [\"GPT2LMHeadModel\"]}";
  r = run("entropy --model " + model_ + " --data " + data_ + " --out " + out);
  EXPECT_EQ(r.code, 1);
  EXPECT_NE(r.output.find(
                "config.json: field 'architectures': unsupported architecture 'GPT2LMHeadModel'"),
            std::string::npos)
      << r.output;
  r = run("entropy --model " + model_ + " --data " + data_ + " --out " + out + " --lens logit");
  EXPECT_NE(r.code, 0);
  EXPECT_NE(r.output.find("--lens"), std::string::npos) << r.output;
}

// Fig. 5/12's geometry from compute_entropy_rows against a float64 recomputation from the taps:
// cos(H^l, H^L), KL(lens(H^l) ‖ π_θ) from full logits, cos(A^l, H^{l-1}), cos(F^l, H^{l-1}+A^l),
// for both lenses and a lens chunk that splits the rows.
TEST(EntropyGeometry, MatchesAFloat64ReferenceFromTheTaps) {
  auto m = test::tiny_model(Arch::Qwen3, false);
  const int L = m->num_layers();
  const int64_t d = m->hidden(), V = m->config().vocab_size;
  const std::vector<TokenRecord> recs = {{{1, 5, 9, 33, 2, 60, 7}, 3, 0},
                                         {{4, 4, 18, 50, 11}, 1, 0}};
  std::vector<std::vector<int32_t>> seqs;
  for (const auto& r : recs) seqs.push_back(r.ids);
  const Batch b = Batch::from_sequences(seqs);
  // the tapped tensors, copied to host: [layer][N·d]
  std::vector<std::vector<float>> H(L + 1), A(L + 1), Hmid(L + 1), F(L + 1);
  const auto grab = [&](const Tensor& t) {
    return std::vector<float>(t.f32(), t.f32() + b.N() * d);
  };
  const TapFn tap = [&](const LayerTaps& t) {
    H[t.layer] = grab(t.h_out);
    if (t.layer == 0) return;
    A[t.layer] = grab(t.attn_out);
    Hmid[t.layer] = grab(t.h_mid);
    F[t.layer] = grab(t.ffn_out);
  };
  Activations acts;
  m->forward(b, acts, false, -1, &tap);
  const float* E = m->unembedding().compute_weight().f32();
  const float* g = m->final_norm().compute_weight().f32();
  const double eps = m->config().rms_norm_eps;
  const auto row = [&](const std::vector<float>& x, int64_t p) { return x.data() + p * d; };
  const auto cosine = [&](const float* x, const float* y) {
    double xy = 0, xx = 0, yy = 0;
    for (int64_t k = 0; k < d; ++k) {
      xy += double{x[k]} * y[k];
      xx += double{x[k]} * x[k];
      yy += double{y[k]} * y[k];
    }
    return xy / std::sqrt(xx * yy);
  };
  const auto log_softmax = [&](const float* x, bool normed) {
    std::vector<double> in(static_cast<size_t>(d)), z(static_cast<size_t>(V));
    double ss = 0;
    for (int64_t k = 0; k < d; ++k) ss += double{x[k]} * x[k];
    const double rstd = 1.0 / std::sqrt(ss / static_cast<double>(d) + eps);
    for (int64_t k = 0; k < d; ++k) in[k] = normed ? x[k] * rstd * g[k] : x[k];
    double mx = -1e300;
    for (int64_t v = 0; v < V; ++v) {
      for (int64_t k = 0; k < d; ++k) z[v] += in[k] * E[v * d + k];
      mx = std::max(mx, z[v]);
    }
    double s = 0;
    for (double zv : z) s += std::exp(zv - mx);
    for (double& zv : z) zv -= mx + std::log(s);
    return z;
  };
  for (const LensMode mode : {LensMode::Raw, LensMode::Normed})
    for (const int64_t chunk : {int64_t{0}, int64_t{3}}) {
      EntropyOptions opt;
      opt.lens = mode;
      opt.lens_chunk_rows = chunk;
      const EntropyRows r = compute_entropy_rows(*m, recs, 0, opt);
      ASSERT_EQ(r.rows, 4 + 4);
      std::vector<int64_t> src;  // hidden row read for each output row (position t - 1)
      for (size_t i = 0; i < recs.size(); ++i)
        for (int64_t t = recs[i].response_start; t < static_cast<int64_t>(recs[i].ids.size()); ++t)
          src.push_back(b.cu_seqlens[i] + t - 1);
      double max_kl = 0;
      for (int64_t i = 0; i < r.rows; ++i) {
        const int64_t p = src[static_cast<size_t>(i)];
        const std::vector<double> lq = log_softmax(row(H[L], p), true);  // π_θ
        for (int l = 0; l <= L; ++l) {
          const size_t c = static_cast<size_t>(i * (L + 1) + l);
          EXPECT_NEAR(r.cos_top[c], cosine(row(H[l], p), row(H[L], p)), 2e-6) << l;
          const std::vector<double> lp = log_softmax(row(H[l], p), mode == LensMode::Normed);
          double kl = 0;
          for (int64_t v = 0; v < V; ++v) kl += std::exp(lp[v]) * (lp[v] - lq[v]);
          EXPECT_NEAR(r.kl_layer[c], kl, 2e-5 * std::max(1.0, kl)) << "layer " << l << " row " << i;
          max_kl = std::max(max_kl, kl);
        }
        EXPECT_NEAR(r.cos_top[static_cast<size_t>(i * (L + 1) + L)], 1.0, 1e-6);
        if (mode == LensMode::Normed) {  // the normed lens at H^L is π_θ itself
          EXPECT_NEAR(r.kl_layer[static_cast<size_t>(i * (L + 1) + L)], 0.0, 1e-5);
        }
        for (int l = 1; l <= L; ++l) {
          const size_t c = static_cast<size_t>(i * L + l - 1);
          EXPECT_NEAR(r.cos_attn[c], cosine(row(A[l], p), row(H[l - 1], p)), 2e-6) << l;
          EXPECT_NEAR(r.cos_ffn[c], cosine(row(F[l], p), row(Hmid[l], p)), 2e-6) << l;
        }
      }
      EXPECT_GT(max_kl, 1e-2) << "the layers' policies should differ from π_θ somewhere";
    }
  // with geometry off the columns are NaN and the entropies unchanged
  EntropyOptions on, off;
  off.geometry = false;
  const EntropyRows a = compute_entropy_rows(*m, recs, 0, on),
                    z = compute_entropy_rows(*m, recs, 0, off);
  EXPECT_EQ(a.layer, z.layer);
  EXPECT_EQ(a.output, z.output);
  EXPECT_EQ(a.lp_ffn_out, z.lp_ffn_out);
  for (float v : z.kl_layer) EXPECT_TRUE(std::isnan(v));
  for (float v : z.cos_ffn) EXPECT_TRUE(std::isnan(v));
}

}  // namespace
}  // namespace bupo
