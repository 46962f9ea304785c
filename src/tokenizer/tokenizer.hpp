// Byte-level BPE from a Hugging Face tokenizer.json (Qwen2/3, Llama 3, GPT-2, SmolLM2):
//   added tokens matched on the raw text first (leftmost-longest), then on each remaining segment
//   the normalizer (NFC via utf8proc, or none), the pre-tokenizers (Split with a Unicode regex via
//   PCRE2, ByteLevel with or without the GPT-2 regex, Digits), the GPT-2 byte→char mapping and BPE
//   merges by rank. Decoding maps chars back to bytes; StreamDecoder never emits half a UTF-8
//   character.
#pragma once
#include <array>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "io/json_util.hpp"

namespace bupo {

class Tokenizer {
 public:
  static Tokenizer from_file(const std::string& path);  // tokenizer.json
  static Tokenizer from_json(const json& j, const std::string& src);
  Tokenizer(Tokenizer&&) noexcept;
  Tokenizer& operator=(Tokenizer&&) noexcept;
  ~Tokenizer();

  // Special and added tokens in the text are recognised (as Hugging Face does by default).
  std::vector<int32_t> encode(std::string_view text) const;
  std::string decode(const std::vector<int32_t>& ids, bool skip_special = false) const;

  int64_t vocab_size() const { return static_cast<int64_t>(id_to_token_.size()); }
  std::optional<int32_t> token_id(std::string_view token) const;
  const std::string& token(int32_t id) const;  // the vocabulary string (byte-level chars)
  bool is_special(int32_t id) const;
  // Raw bytes this token stands for (added tokens: their content).
  std::string token_bytes(int32_t id) const;

  struct PreTokenizer;  // one step of the pre-tokenizer pipeline
  struct AddedToken {
    std::string content;
    int32_t id;
    bool special;
  };

 private:
  Tokenizer();
  void bpe(std::string_view piece, std::vector<int32_t>& out) const;
  void encode_segment(std::string_view text, std::vector<int32_t>& out) const;

  std::unordered_map<std::string, int32_t> vocab_;
  std::vector<std::string> id_to_token_;
  std::unordered_map<uint64_t, std::pair<int32_t, int32_t>> merges_;  // (a,b) -> (rank, merged id)
  std::vector<AddedToken> added_;  // sorted by content length, longest first
  std::vector<bool> special_, added_flag_;
  std::array<bool, 256> added_first_byte_{};  // bytes that can start an added token
  std::vector<std::unique_ptr<PreTokenizer>> pre_;
  bool nfc_ = false;
  bool ignore_merges_ = false;
  int32_t byte_ids_[256] = {};  // id of each single byte's byte-level char
};

// Incremental decoding for streaming generation: push ids, get text as soon as it forms whole
// UTF-8 characters.
class StreamDecoder {
 public:
  explicit StreamDecoder(const Tokenizer& t, bool skip_special = false)
      : tok_(t), skip_special_(skip_special) {}
  std::string push(int32_t id);
  std::string flush();  // whatever is left, invalid bytes replaced by U+FFFD

 private:
  const Tokenizer& tok_;
  bool skip_special_;
  std::string pending_;
};

// The GPT-2 byte-level alphabet: byte b <-> one Unicode code point, as UTF-8.
const std::string& byte_to_char(uint8_t b);
// Length of the complete UTF-8 prefix of s (bytes of a trailing incomplete character excluded).
size_t utf8_complete_prefix(std::string_view s);

}  // namespace bupo
