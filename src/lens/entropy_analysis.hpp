// `bupo entropy`: the per-token internal-policy entropies of papers.md §1.2–1.3 for every layer
// and module of a model over a set of responses, and the geometry of Fig. 5 / Fig. 12 (§1.4,
// §1.9), written to HDF5 row by row.
//
// For each response token t (ids[t], t >= response_start) one row is written; its distributions
// are read at hidden position t-1 (the position that predicts ids[t]):
//   layer[:, l]  l = 0..L   lens(H^l)
//   attn_in[:, l-1]         lens(LN_in(H^{l-1}))      attn_out[:, l-1]  lens(A^l)
//   ffn_in[:, l-1]          lens(LN_post(H^{l-1}+A^l)) ffn_out[:, l-1]   lens(F^l)
//   output                  softmax(LN_final(H^L)·E_uᵀ): the model's own policy π_θ
// lens = raw: softmax(x·E_uᵀ) (the paper's); normed: softmax(LN_final(x)·E_uᵀ). With
// geometry on, also
//   cos_top[:, l]  l = 0..L   cos(H^l, H^L)                     (Fig. 5's cos(H^6, H^top))
//   kl_layer[:, l] l = 0..L   KL(lens(H^l) ‖ π_θ), nats        (Fig. 5's KL(π^6 ‖ ·))
//   cos_attn[:, l-1]          cos(A^l, H^{l-1})                 (Fig. 12)
//   cos_ffn[:, l-1]           cos(F^l, H^{l-1} + A^l)           (Fig. 12)
// The perplexity of π^l on a response is exp(−mean over its rows of lp_layer[:, l]).
#pragma once
#include <array>
#include <functional>
#include <string>

#include "io/h5_raw_rows.hpp"
#include "io/token_data.hpp"
#include "lens/lens.hpp"
#include "model/model.hpp"

namespace bupo {

struct EntropyOptions {
  LensMode lens = LensMode::Raw;
  int64_t max_batch_tokens = 4096;  // records are packed into forward batches up to this size
  int64_t lens_chunk_rows = 0;      // 0: automatic
  // cos_top, kl_layer, cos_attn, cos_ffn: one more forward pass (for H^L and π_θ) and Ē per
  // layer row (Lens::KlToReference); off, those columns are NaN.
  bool geometry = true;
};

// Per-row outputs of one batch, each (rows) or (rows, cols) row-major.
struct EntropyRows {
  static constexpr size_t kFloatColumns = 16;
  int64_t rows = 0;
  std::vector<int64_t> record, position;
  std::vector<int32_t> token_id;
  std::vector<float> layer, attn_in, attn_out, ffn_in, ffn_out, output;  // entropies
  std::vector<float> lp_layer, lp_attn_in, lp_attn_out, lp_ffn_in, lp_ffn_out,
      lp_output;                                    // log-probs
  std::vector<float> cos_top, kl_layer, cos_attn, cos_ffn;  // geometry: (L+1) ×2, (L) ×2
  // The float columns in the file's order: the entropies of the six modules (layer, attn_in,
  // attn_out, ffn_in, ffn_out, output), their log-probs, then cos_top, kl_layer, cos_attn,
  // cos_ffn; column c holds column_width(c, L) values per row.
  std::array<std::vector<float>*, kFloatColumns> float_columns();
  std::array<const std::vector<float>*, kFloatColumns> float_columns() const;
};
// Values per row of float column c (EntropyRows::float_columns) of an L-layer model.
int64_t column_width(size_t c, int64_t L);

// Compute the rows of a set of records (records packed into one batch; one forward pass, two
// with geometry).
EntropyRows compute_entropy_rows(Model& model, const std::vector<TokenRecord>& recs,
                                 int64_t first_record, const EntropyOptions& opt);

// Writes the HDF5 schema documented in README.md: created whole at its final size (the rows are
// known before the first batch), then each batch's rows as raw data and the /progress counter
// (io/h5_raw_rows.hpp), so a writer killed at any instant leaves every committed batch readable.
class EntropyWriter {
 public:
  EntropyWriter(const std::string& path, bool overwrite, const Model& model,
                const std::string& model_path, const std::string& data_path, LensMode lens,
                bool geometry, int64_t total_rows, int64_t total_records);
  // Writes a batch's rows after the previous ones, durably, then /progress = {rows, records_done}.
  void append(const EntropyRows& rows, int64_t records_done);
  void finish();  // every planned row written (an error otherwise); closes the file
  int64_t rows() const { return rows_; }

 private:
  h5::RawRowWriter file_;
  int64_t total_rows_ = 0, rows_ = 0;
};

// Whole command over validated records: runs all batches and writes the file. progress(done,
// total) is called after each batch.
void run_entropy(Model& model, const std::vector<TokenRecord>& recs, const std::string& model_path,
                 const std::string& data_path, const std::string& out_path, bool overwrite,
                 const EntropyOptions& opt,
                 const std::function<void(int64_t, int64_t)>& progress = {});

}  // namespace bupo
