#include "lens/entropy_analysis.hpp"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <csignal>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <limits>
#include <map>
#include <optional>

#include "bupo/version.hpp"
#include "core/error.hpp"
#include "core/utc.hpp"
#include "io/h5_append.hpp"
#include "parallel/tensor_parallel.hpp"

namespace bupo {
namespace {
constexpr const char* kModules[6] = {"layer", "attn_in", "attn_out", "ffn_in", "ffn_out", "output"};

}  // namespace

namespace {
// Values per row of module m (0..5: layer, attn_in, attn_out, ffn_in, ffn_out, output).
int64_t module_width(int m, int64_t L) {
  return m == 0 ? L + 1 : m == 5 ? 1 : L;
}
constexpr size_t kGeometryFrom = 12;  // the first geometry column
const char* const kGeometryDatasets[4] = {"/geometry/cos_to_top", "/kl/layer_to_output",
                                          "/geometry/cos_attn_residual",
                                          "/geometry/cos_ffn_residual"};
// The file's dataset of float column c (EntropyRows::float_columns).
std::string column_dataset(size_t c) {
  if (c >= kGeometryFrom) return kGeometryDatasets[c - kGeometryFrom];
  return std::string(c < 6 ? "/entropy/" : "/logprob/") + kModules[c % 6];
}
}  // namespace

int64_t column_width(size_t c, int64_t L) {
  if (c >= kGeometryFrom) return c < kGeometryFrom + 2 ? L + 1 : L;
  return module_width(static_cast<int>(c % 6), L);
}
std::array<std::vector<float>*, EntropyRows::kFloatColumns> EntropyRows::float_columns() {
  return {&layer,    &attn_in,    &attn_out,    &ffn_in,    &ffn_out,    &output,
          &lp_layer, &lp_attn_in, &lp_attn_out, &lp_ffn_in, &lp_ffn_out, &lp_output,
          &cos_top,  &kl_layer,   &cos_attn,    &cos_ffn};
}
std::array<const std::vector<float>*, EntropyRows::kFloatColumns> EntropyRows::float_columns()
    const {
  return {&layer,    &attn_in,    &attn_out,    &ffn_in,    &ffn_out,    &output,
          &lp_layer, &lp_attn_in, &lp_attn_out, &lp_ffn_in, &lp_ffn_out, &lp_output,
          &cos_top,  &kl_layer,   &cos_attn,    &cos_ffn};
}

EntropyRows compute_entropy_rows(Model& model, const std::vector<TokenRecord>& recs,
                                 int64_t first_record, const EntropyOptions& opt) {
  const int L = model.num_layers();
  const int64_t d = model.hidden();
  std::vector<std::vector<int32_t>> seqs;
  for (const auto& r : recs) seqs.push_back(r.ids);
  const Batch b = Batch::from_sequences(seqs);

  EntropyRows out;
  std::vector<int64_t> src;  // hidden row that predicts each output row
  for (size_t i = 0; i < recs.size(); ++i) {
    const auto& r = recs[i];
    for (int64_t t = r.response_start; t < static_cast<int64_t>(r.ids.size()); ++t) {
      out.record.push_back(first_record + static_cast<int64_t>(i));
      out.position.push_back(t);
      out.token_id.push_back(r.ids[static_cast<size_t>(t)]);
      src.push_back(b.cu_seqlens[i] + t - 1);
    }
  }
  const int64_t R = out.rows = static_cast<int64_t>(src.size());
  const auto sz = [&](int64_t cols) { return static_cast<size_t>(R * cols); };
  const auto columns = out.float_columns();
  for (size_t c = 0; c < columns.size(); ++c) columns[c]->assign(sz(column_width(c, L)), 0.0f);
  if (R == 0) return out;

  Lens lens{&model.unembedding(),
            &model.final_norm(),
            opt.lens,
            static_cast<float>(model.config().rms_norm_eps),
            model.parallel().dev.tp.get(),
            opt.lens_chunk_rows};
  const Lens output_lens{&model.unembedding(), nullptr, LensMode::Raw, lens.eps, lens.tp,
                         opt.lens_chunk_rows};
  Backend& be = model.backend();
  ParallelContext& pc = model.parallel();
  Comm& pp = *pc.pp;
  // The gathered rows (R, d) in the backend's memory — xs and xs2 for the tapped tensors, top =
  // H^L and y_out = LN_final(H^L) for the geometry — which rows they are, and row dot products.
  std::vector<int32_t> src32(src.begin(), src.end());
  const DType t = be.compute_dtype();
  ArenaLease mem = be.activations().lease(
      static_cast<size_t>(R) * (4 * static_cast<size_t>(d) * dtype_size(t) + 4 + 24) +
      8 * Arena::kAlign);
  const Tensor xs = mem->alloc(t, {R, d}), xs2 = mem->alloc(t, {R, d});
  const Tensor top = mem->alloc(t, {R, d}), y_out = mem->alloc(t, {R, d});
  const Tensor rows = mem->alloc(DType::I32, {R});
  const Tensor dots = mem->alloc(DType::F64, {R, 3});
  be.upload(rows, src32.data());
  std::vector<float> ent(sz(1)), lp(sz(1)), kl(sz(1)), lse_out(sz(1));
  std::vector<double> dots_host(sz(3));
  const auto set = [&](std::vector<float>& to, const std::vector<float>& from, int64_t col,
                       int64_t cols) {
    for (int64_t r = 0; r < R; ++r)
      to[static_cast<size_t>(r * cols + col)] = from[static_cast<size_t>(r)];
  };
  // Evaluate the lens on the gathered rows of x (left in xs) into column `col` of (R, cols), and
  // with klr the KL to π_θ into the same column of kl_layer.
  auto eval = [&](const Lens& ln, const Tensor& x, std::vector<float>& E, std::vector<float>& LP,
                  int64_t col, int64_t cols, const Lens::KlToReference* klr = nullptr) {
    be.gather_rows(xs, x, rows);
    ln.forward(xs, out.token_id.data(), ent.data(), lp.data(), nullptr, klr);
    set(E, ent, col, cols);
    set(LP, lp, col, cols);
    if (klr) set(out.kl_layer, kl, col, cols);
  };
  // cos(xs, y) per row into column `col` of (R, cols); y (R, d) already gathered.
  auto cosine = [&](const Tensor& y, std::vector<float>& C, int64_t col, int64_t cols) {
    be.row_dots(dots, xs, y);
    be.download(dots_host.data(), dots);
    for (int64_t r = 0; r < R; ++r) {
      const double* q = dots_host.data() + 3 * r;
      const double den = std::sqrt(q[1] * q[2]);
      C[static_cast<size_t>(r * cols + col)] =
          den > 0 ? static_cast<float>(q[0] / den) : std::numeric_limits<float>::quiet_NaN();
    }
  };

  Activations acts;
  const bool geometry = opt.geometry;
  if (geometry) {
    // Pass 1: the rows of H^L and of π_θ's input, and π_θ's log-partition, which every layer's
    // rows are compared against; the last stage has them and sends them to the others.
    model.forward(b, acts, /*keep=*/false, L, nullptr);
    if (pc.last_stage()) {
      be.gather_rows(top, acts.h(L), rows);
      be.gather_rows(y_out, acts.final_out, rows);
      output_lens.forward(y_out, out.token_id.data(), ent.data(), lp.data(), lse_out.data());
      set(out.output, ent, 0, 1);
      set(out.lp_output, lp, 0, 1);
    }
    if (pp.size() > 1) {
      Comm& ppd = *pc.dev.pp;
      const int last = pp.size() - 1;
      for (int s = 0; s < last; ++s)
        if (pp.rank() == last) {
          send_tensor(ppd, top, s);
          send_tensor(ppd, y_out, s);
        } else if (pp.rank() == s) {
          recv_tensor(ppd, top, last);
          recv_tensor(ppd, y_out, last);
        }
      pp.broadcast(lse_out.data(), lse_out.size() * sizeof(float), last);
    }
  }
  // Pass 2: every layer's and module's rows through the lens (and the geometry) as they pass.
  const Lens::KlToReference klref{y_out, lse_out.data(), kl.data()};
  const TapFn tap = [&](const LayerTaps& tp) {
    const int64_t l = tp.layer;
    eval(lens, tp.h_out, out.layer, out.lp_layer, l, L + 1, geometry ? &klref : nullptr);
    if (geometry) cosine(top, out.cos_top, l, L + 1);
    if (l == 0) return;
    eval(lens, tp.attn_in, out.attn_in, out.lp_attn_in, l - 1, L);
    eval(lens, tp.attn_out, out.attn_out, out.lp_attn_out, l - 1, L);
    if (geometry) {
      be.gather_rows(xs2, tp.h_in, rows);
      cosine(xs2, out.cos_attn, l - 1, L);
    }
    eval(lens, tp.ffn_in, out.ffn_in, out.lp_ffn_in, l - 1, L);
    eval(lens, tp.ffn_out, out.ffn_out, out.lp_ffn_out, l - 1, L);
    if (geometry) {
      be.gather_rows(xs2, tp.h_mid, rows);
      cosine(xs2, out.cos_ffn, l - 1, L);
    }
  };
  model.forward(b, acts, /*keep=*/false, L, &tap);
  if (!geometry && pc.last_stage())
    eval(output_lens, acts.final_out, out.output, out.lp_output, 0, 1);
  // every stage filled its own layers' columns: one packed sum over PP (of the columns computed)
  const size_t computed = geometry ? columns.size() : kGeometryFrom;
  if (pp.size() > 1) {
    std::vector<float> packed;
    for (size_t c = 0; c < computed; ++c)
      packed.insert(packed.end(), columns[c]->begin(), columns[c]->end());
    pp.allreduce_sum(packed.data(), packed.size());
    size_t o = 0;
    for (size_t c = 0; c < computed; ++c) {
      std::copy_n(packed.data() + o, columns[c]->size(), columns[c]->data());
      o += columns[c]->size();
    }
  }
  for (size_t c = computed; c < columns.size(); ++c)
    std::fill(columns[c]->begin(), columns[c]->end(), std::numeric_limits<float>::quiet_NaN());
  return out;
}

namespace {
// The fixed datasets of the file, each with its kind.
std::map<std::string, h5::Kind> entropy_datasets() {
  std::map<std::string, h5::Kind> m = {{"/tokens/record", h5::Kind::I64},
                                       {"/tokens/position", h5::Kind::I64},
                                       {"/tokens/token_id", h5::Kind::I32}};
  for (size_t c = 0; c < EntropyRows::kFloatColumns; ++c) m[column_dataset(c)] = h5::Kind::F32;
  return m;
}
}  // namespace

EntropyWriter::EntropyWriter(const std::string& path, bool overwrite, const Model& model,
                             const std::string& model_path, const std::string& data_path,
                             LensMode lens, bool geometry, int64_t total_rows,
                             int64_t total_records)
    : total_rows_(total_rows) {
  const auto& c = model.config();
  const int64_t L = c.num_layers, N = total_rows;
  // Created whole under a temporary name and renamed; afterwards only raw rows and the progress
  // counter are written (io/h5_raw_rows.hpp), so no instant of the run can leave it unreadable.
  h5::AppendFile::create(path, overwrite, [&](h5::File& f) {
    h5::create_fixed_rows(f.id(), "/tokens/record", h5::Kind::I64, N, 0,
                          "0-based index of the data row (non-blank line) this token belongs to");
    h5::create_fixed_rows(
        f.id(), "/tokens/position", h5::Kind::I64, N, 0,
        "index t of the token in its record's ids; distributions are read at position t-1");
    h5::create_fixed_rows(f.id(), "/tokens/token_id", h5::Kind::I32, N, 0, "the token ids[t]");
    const std::string lens_desc =
        lens == LensMode::Raw ? "softmax(x E_u^T), no final norm" : "softmax(LN_final(x) E_u^T)";
    const std::string what[6] = {
        "H^l for l = 0..L (column l)",   "LN_in(H^{l-1}) for l = 1..L (column l-1)",
        "A^l for l = 1..L (column l-1)", "LN_post(H^{l-1}+A^l) for l = 1..L (column l-1)",
        "F^l for l = 1..L (column l-1)", "softmax(LN_final(H^L) E_u^T): the output policy"};
    for (size_t col = 0; col < kGeometryFrom; ++col) {
      const auto m = static_cast<int>(col % 6);
      const std::string lensd = m == 5 ? "" : " under the lens " + lens_desc;
      const int64_t width = module_width(m, L);
      h5::create_fixed_rows(
          f.id(), column_dataset(col), h5::Kind::F32, N, width == 1 ? 0 : width,
          (col < 6 ? "entropy (nats) of " : "log-prob (nats) of token_id under ") + what[m] +
              lensd);
    }
    const std::string off = geometry ? "" : " (NaN: written with geometry off)";
    const std::string geo[4] = {"cos(H^l, H^L) for l = 0..L (column l)",
                                "KL(lens(H^l) || pi_theta) (nats) for l = 0..L (column l), "
                                "pi_theta = softmax(LN_final(H^L) "
                                "E_u^T), the lens " +
                                    lens_desc,
                                "cos(A^l, H^{l-1}) for l = 1..L (column l-1)",
                                "cos(F^l, H^{l-1}+A^l) for l = 1..L (column l-1)"};
    for (size_t g = 0; g < 4; ++g)
      h5::create_fixed_rows(f.id(), column_dataset(kGeometryFrom + g), h5::Kind::F32, N,
                            column_width(kGeometryFrom + g, L), geo[g] + off);
    h5::create_fixed_rows(f.id(), "/progress", h5::Kind::I64, 2, 0,
                          "[rows written, records written]: rows below progress[0] are final; "
                          "the file is complete when progress[0] == num_tokens");
    f.set_attr("/", "schema", std::string("bupo-entropy"));
    f.set_attr("/", "schema_version", int64_t{3});
    f.set_attr("/", "program", std::string("bupo"));
    f.set_attr("/", "program_version", std::string(kVersion));
    f.set_attr("/", "created_utc", utc_now());
    f.set_attr("/", "model_path", model_path);
    f.set_attr("/", "data_path", data_path);
    f.set_attr("/", "architecture", std::string(arch_name(c.arch)));
    f.set_attr("/", "num_layers", L);
    f.set_attr("/", "vocab_size", c.vocab_size);
    f.set_attr("/", "hidden_size", c.hidden_size);
    f.set_attr("/", "tie_word_embeddings", int64_t{c.tie_word_embeddings ? 1 : 0});
    f.set_attr("/", "lens", std::string(lens_mode_name(lens)));
    f.set_attr("/", "geometry", int64_t{geometry ? 1 : 0});
    f.set_attr("/", "entropy_units", std::string("nats"));
    f.set_attr("/", "num_records", total_records);
    f.set_attr("/", "num_tokens", N);
  });
  file_ = h5::RawRowWriter(path, entropy_datasets(), "/progress");
}

void EntropyWriter::append(const EntropyRows& r, int64_t records_done) {
  BUPO_CHECK(rows_ + r.rows <= total_rows_, file_.path(), ": more rows (", rows_ + r.rows,
             ") than planned (", total_rows_, ")");
  file_.write("/tokens/record", rows_, r.record.data(), r.rows);
  file_.write("/tokens/position", rows_, r.position.data(), r.rows);
  file_.write("/tokens/token_id", rows_, r.token_id.data(), r.rows);
  const auto columns = r.float_columns();
  for (size_t c = 0; c < columns.size(); ++c)
    file_.write(column_dataset(c), rows_, columns[c]->data(), r.rows);
  rows_ += r.rows;
  file_.commit(rows_, records_done);
}

void EntropyWriter::finish() {
  BUPO_CHECK(rows_ == total_rows_, file_.path(), ": ", rows_, " rows written of ", total_rows_,
             " planned");
  file_.close();
}

namespace {
// One batch's rows through a host communicator (data-parallel replica -> the writer): the row
// count, then every column packed into floats (the integer columns bit for bit).
std::vector<float> pack_rows(const EntropyRows& r) {
  std::vector<float> out;
  auto put = [&out](const void* p, size_t bytes) {
    const size_t at = out.size();
    out.resize(at + bytes / sizeof(float));
    if (bytes) std::memcpy(out.data() + at, p, bytes);
  };
  put(r.record.data(), r.record.size() * 8);
  put(r.position.data(), r.position.size() * 8);
  put(r.token_id.data(), r.token_id.size() * 4);
  for (const auto* v : r.float_columns()) put(v->data(), v->size() * 4);
  return out;
}
// Floats per row of pack_rows: record and position (2 each), token_id (1), the float columns.
size_t packed_floats_per_row(int64_t L) {
  size_t n = 2 + 2 + 1;
  for (size_t c = 0; c < EntropyRows::kFloatColumns; ++c)
    n += static_cast<size_t>(column_width(c, L));
  return n;
}
EntropyRows unpack_rows(const std::vector<float>& in, int64_t rows, int64_t L) {
  EntropyRows r;
  r.rows = rows;
  const auto R = static_cast<size_t>(rows);
  size_t at = 0;
  auto get = [&](auto& v, size_t n) {
    v.resize(n);
    const size_t bytes = n * sizeof(v[0]);
    if (bytes) std::memcpy(v.data(), in.data() + at, bytes);
    at += bytes / sizeof(float);
  };
  get(r.record, R);
  get(r.position, R);
  get(r.token_id, R);
  const auto columns = r.float_columns();
  for (size_t c = 0; c < columns.size(); ++c)
    get(*columns[c], R * static_cast<size_t>(column_width(c, L)));
  BUPO_CHECK(at == in.size(), "bupo entropy: a replica's rows arrived with ", in.size(),
             " values, ", at, " expected");
  return r;
}
}  // namespace

void run_entropy(Model& model, const std::vector<TokenRecord>& recs, const std::string& model_path,
                 const std::string& data_path, const std::string& out_path, bool overwrite,
                 const EntropyOptions& opt, const std::function<void(int64_t, int64_t)>& progress) {
  const int64_t maxpos = model.config().max_position_embeddings;
  for (const auto& r : recs)
    BUPO_CHECK(static_cast<int64_t>(r.ids.size()) <= maxpos, data_path, ":", r.line,
               ": field 'ids' has ", r.ids.size(),
               " tokens, more than the model's max_position_embeddings (", maxpos, ")");
  const int64_t n = static_cast<int64_t>(recs.size());
  int64_t total_rows = 0;  // what compute_entropy_rows yields: one row per response token
  for (const auto& r : recs)
    total_rows += std::max<int64_t>(0, static_cast<int64_t>(r.ids.size()) - r.response_start);
  // the batches, [first record, end record), the same on every rank
  std::vector<std::pair<int64_t, int64_t>> spans;
  for (int64_t i = 0; i < n;) {
    int64_t j = i, tokens = 0;
    while (j < n &&
           (j == i || tokens + static_cast<int64_t>(recs[static_cast<size_t>(j)].ids.size()) <=
                          opt.max_batch_tokens)) {
      tokens += static_cast<int64_t>(recs[static_cast<size_t>(j)].ids.size());
      ++j;
    }
    spans.emplace_back(i, j);
    i = j;
  }
  // One writer (world rank 0, the root of replica 0). Inside a replica, pipeline stages compute
  // their own layers and TP ranks their vocabulary shard; data-parallel replicas take the batches
  // in turn (batch b on replica b mod dp), and each replica's root (tp 0, stage 0) sends its rows
  // to the writer, which appends them in batch order.
  ParallelContext& pc = model.parallel();
  const auto D = static_cast<size_t>(pc.dp_size()), d = static_cast<size_t>(pc.dp_rank());
  const bool replica_root = pc.tp_rank() == 0 && pc.pp_rank() == 0;
  const int64_t L = model.num_layers();
  std::optional<EntropyWriter> w;
  if (pc.world->rank() == 0)
    w.emplace(out_path, overwrite, model, model_path, data_path, opt.lens, opt.geometry, total_rows,
              n);
  // Fault injection for crash-consistency tests: SIGKILL ourselves after this many flushed batches.
  const char* fault = std::getenv("BUPO_FAULT_KILL_AFTER_BATCHES");
  const int64_t kill_after = fault ? std::atoll(fault) : -1;
  int64_t batches = 0;
  for (size_t b0 = 0; b0 < spans.size(); b0 += D) {
    EntropyRows mine;
    if (b0 + d < spans.size()) {
      const auto [i, j] = spans[b0 + d];
      const std::vector<TokenRecord> batch(recs.begin() + i, recs.begin() + j);
      mine = compute_entropy_rows(model, batch, i, opt);
      if (!w && replica_root && d > 0) {
        float rows = static_cast<float>(mine.rows);  // exact: a batch is < 2^24 tokens
        pc.dp->send(&rows, 1, 0);
        const std::vector<float> packed = pack_rows(mine);
        pc.dp->send(packed.data(), packed.size(), 0);
      }
    }
    if (w) {
      for (size_t k = 0; k < D && b0 + k < spans.size(); ++k) {
        if (k == 0) {
          w->append(mine, spans[b0].second);
        } else {
          float rows = 0;
          pc.dp->recv(&rows, 1, static_cast<int>(k));
          const auto R = static_cast<int64_t>(rows);
          std::vector<float> packed(static_cast<size_t>(R) * packed_floats_per_row(L));
          pc.dp->recv(packed.data(), packed.size(), static_cast<int>(k));
          w->append(unpack_rows(packed, R, L), spans[b0 + k].second);
        }
        if (++batches == kill_after) std::raise(SIGKILL);
      }
    }
    if (progress) progress(spans[std::min(b0 + D, spans.size()) - 1].second, n);
  }
  if (w) w->finish();
}

}  // namespace bupo
