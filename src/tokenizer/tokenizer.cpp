#include "tokenizer/tokenizer.hpp"

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <utf8proc.h>

#include <algorithm>
#include <array>
#include <climits>
#include <functional>

#include "core/error.hpp"
#include "core/work_counter.hpp"

namespace bupo {

// ---------------------------------------------------------------------------- byte-level alphabet
namespace {
std::string utf8_encode(uint32_t cp) {
  std::string s;
  if (cp < 0x80) {
    s += static_cast<char>(cp);
  } else if (cp < 0x800) {
    s += static_cast<char>(0xC0 | (cp >> 6));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else if (cp < 0x10000) {
    s += static_cast<char>(0xE0 | (cp >> 12));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  } else {
    s += static_cast<char>(0xF0 | (cp >> 18));
    s += static_cast<char>(0x80 | ((cp >> 12) & 0x3F));
    s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
    s += static_cast<char>(0x80 | (cp & 0x3F));
  }
  return s;
}

struct ByteAlphabet {
  std::array<std::string, 256> to_char;
  std::unordered_map<std::string, uint8_t> to_byte;
  ByteAlphabet() {
    // GPT-2: printable bytes map to themselves, the others to 256, 257, ... in byte order
    uint32_t next = 256;
    for (uint32_t b = 0; b < 256; ++b) {
      const bool printable =
          (b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255);
      to_char[b] = utf8_encode(printable ? b : next++);
      to_byte[to_char[b]] = static_cast<uint8_t>(b);
    }
  }
};
const ByteAlphabet& alphabet() {
  static const ByteAlphabet a;
  return a;
}
}  // namespace

const std::string& byte_to_char(uint8_t b) {
  return alphabet().to_char[b];
}

size_t utf8_complete_prefix(std::string_view s) {
  // walk back over at most 3 continuation bytes to the last lead byte
  size_t n = s.size();
  for (size_t back = 1; back <= std::min<size_t>(4, n); ++back) {
    const auto c = static_cast<unsigned char>(s[n - back]);
    if ((c & 0xC0) == 0x80) continue;  // continuation byte
    const size_t need = c < 0x80           ? 1
                        : (c >> 5) == 0x6  ? 2
                        : (c >> 4) == 0xE  ? 3
                        : (c >> 3) == 0x1E ? 4
                                           : 1;
    return back >= need ? n : n - back;
  }
  return n;
}

// ---------------------------------------------------------------------------- pre-tokenizers
struct Tokenizer::PreTokenizer {
  enum class Kind { Split, ByteLevel, Digits } kind = Kind::Split;
  pcre2_code* re = nullptr;  // Split pattern, or the GPT-2 pattern of ByteLevel(use_regex)
  bool add_prefix_space = false;
  bool individual_digits = false;
  ~PreTokenizer() {
    if (re) pcre2_code_free(re);
  }
  void apply(std::vector<std::string>& pieces) const;
};

namespace {
constexpr const char* kGpt2Pattern =
    R"('s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+)";

pcre2_code* compile_regex(const std::string& pattern, const std::string& src) {
  int err = 0;
  PCRE2_SIZE off = 0;
  pcre2_code* re = pcre2_compile(reinterpret_cast<PCRE2_SPTR>(pattern.c_str()), pattern.size(),
                                 PCRE2_UTF | PCRE2_UCP | PCRE2_NO_UTF_CHECK, &err, &off, nullptr);
  if (!re) {
    PCRE2_UCHAR msg[256];
    pcre2_get_error_message(err, msg, sizeof msg);
    fail(src, ": pre_tokenizer regex does not compile at offset ", off, ": ",
         reinterpret_cast<char*>(msg));
  }
  pcre2_jit_compile(re, PCRE2_JIT_COMPLETE);  // falls back to the interpreter if JIT is unavailable
  return re;
}

// Isolated split: matches and the gaps between them become pieces, in order.
void split_isolated(const pcre2_code* re, const std::string& s, std::vector<std::string>& out) {
  pcre2_match_data* md = pcre2_match_data_create_from_pattern(re, nullptr);
  size_t pos = 0, last = 0;
  while (pos <= s.size()) {
    const int rc = pcre2_match(re, reinterpret_cast<PCRE2_SPTR>(s.data()), s.size(), pos,
                               PCRE2_NO_UTF_CHECK, md, nullptr);
    if (rc < 0) break;
    const PCRE2_SIZE* ov = pcre2_get_ovector_pointer(md);
    const size_t b = ov[0], e = ov[1];
    work::count(1 + e - b);
    if (e == b) {  // empty match: step one character
      pos = b + 1;
      while (pos < s.size() && (static_cast<unsigned char>(s[pos]) & 0xC0) == 0x80) ++pos;
      continue;
    }
    if (b > last) out.emplace_back(s.substr(last, b - last));
    out.emplace_back(s.substr(b, e - b));
    last = pos = e;
  }
  if (last < s.size()) out.emplace_back(s.substr(last));
  pcre2_match_data_free(md);
}
}  // namespace

void Tokenizer::PreTokenizer::apply(std::vector<std::string>& pieces) const {
  std::vector<std::string> out;
  for (auto& p : pieces) {
    switch (kind) {
      case Kind::Split:
        split_isolated(re, p, out);
        break;
      case Kind::ByteLevel:
        if (add_prefix_space && (p.empty() || p[0] != ' ')) p.insert(p.begin(), ' ');
        if (re)
          split_isolated(re, p, out);
        else
          out.push_back(std::move(p));
        break;
      case Kind::Digits: {
        size_t i = 0;
        while (i < p.size()) {
          const bool digit = p[i] >= '0' && p[i] <= '9';
          size_t j = i + 1;
          if (!digit || !individual_digits)
            while (j < p.size() && ((p[j] >= '0' && p[j] <= '9') == digit)) ++j;
          out.emplace_back(p.substr(i, j - i));
          i = j;
        }
        break;
      }
    }
  }
  pieces = std::move(out);
}

// ---------------------------------------------------------------------------- loading
Tokenizer::Tokenizer() = default;
Tokenizer::Tokenizer(Tokenizer&&) noexcept = default;
Tokenizer& Tokenizer::operator=(Tokenizer&&) noexcept = default;
Tokenizer::~Tokenizer() = default;

Tokenizer Tokenizer::from_file(const std::string& path) {
  return from_json(read_json_file(path), path);
}

// The largest id a tokenizer may use: the vocabulary bound of bupo's models (ModelLimits::vocab in
// model/config.hpp). The id table is allocated up to the largest id, so an unbounded id in a small
// file (a fuzzed one asked for 7 GB) must be refused first.
constexpr int64_t kMaxTokenId = (int64_t{1} << 24) - 1;

Tokenizer Tokenizer::from_json(const json& j, const std::string& src) {
  Tokenizer t;
  BUPO_CHECK(j.is_object() && j.contains("model") && j["model"].is_object(), src,
             ": expected a Hugging Face tokenizer.json with a 'model' object");
  const json& m = j["model"];
  const std::string type = json_string_or(m, "type", src + ": model", "BPE");
  BUPO_CHECK(type == "BPE", src, ": field 'model.type': only BPE is supported, got '", type, "'");
  t.ignore_merges_ = json_bool_or(m, "ignore_merges", src + ": model", false);
  BUPO_CHECK(
      !json_bool_or(m, "byte_fallback", src + ": model", false), src,
      ": field 'model.byte_fallback': byte-fallback (SentencePiece-style) BPE is not supported");
  auto vit = m.find("vocab");
  BUPO_CHECK(vit != m.end() && vit->is_object(), src,
             ": field 'model.vocab': expected an object {token: id}");
  int64_t max_id = -1;
  for (auto it = vit->begin(); it != vit->end(); ++it) {
    const auto exact = json_exact_int(it.value());
    BUPO_CHECK(exact && *exact >= 0 && *exact <= kMaxTokenId, src, ": field 'model.vocab'['",
               it.key(), "']: expected an id in [0, 2^24 - 1], got ", it.value().dump());
    const auto id = static_cast<int32_t>(*exact);
    t.vocab_.emplace(it.key(), id);
    max_id = std::max<int64_t>(max_id, id);
  }
  auto at = j.find("added_tokens");
  if (at != j.end() && at->is_array())
    for (const auto& a : *at) {
      AddedToken tok{
          json_string_or(a, "content", src + ": added_tokens", ""),
          static_cast<int32_t>(json_int(a, "id", src + ": added_tokens", 0, kMaxTokenId)),
          json_bool_or(a, "special", src + ": added_tokens", false)};
      BUPO_CHECK(!tok.content.empty(), src, ": added_tokens: empty 'content'");
      max_id = std::max<int64_t>(max_id, tok.id);
      t.added_.push_back(tok);
    }
  t.id_to_token_.assign(static_cast<size_t>(max_id + 1), std::string());
  t.special_.assign(static_cast<size_t>(max_id + 1), false);
  t.added_flag_.assign(static_cast<size_t>(max_id + 1), false);
  for (const auto& [s, id] : t.vocab_) t.id_to_token_[static_cast<size_t>(id)] = s;
  for (const auto& a : t.added_) {
    t.id_to_token_[static_cast<size_t>(a.id)] = a.content;
    t.special_[static_cast<size_t>(a.id)] = a.special;
    t.added_flag_[static_cast<size_t>(a.id)] = true;
    t.added_first_byte_[static_cast<unsigned char>(a.content[0])] = true;
    t.vocab_.emplace(a.content, a.id);
  }
  std::stable_sort(t.added_.begin(), t.added_.end(), [](const AddedToken& a, const AddedToken& b) {
    return a.content.size() > b.content.size();
  });

  // A byte without a token (some vocabularies lack rare control bytes) is skipped when encoding,
  // as Hugging Face's BPE does without an unk_token; most bytes must be present.
  int missing = 0;
  for (int b = 0; b < 256; ++b) {
    auto it = t.vocab_.find(byte_to_char(static_cast<uint8_t>(b)));
    t.byte_ids_[b] = it == t.vocab_.end() ? -1 : it->second;
    missing += it == t.vocab_.end();
  }
  BUPO_CHECK(missing < 64, src, ": model.vocab lacks the byte-level tokens of ", missing,
             " bytes: not a byte-level BPE tokenizer");
  auto mit = m.find("merges");
  BUPO_CHECK(mit != m.end() && mit->is_array(), src, ": field 'model.merges': expected a list");
  int32_t rank = 0;
  for (const auto& mg : *mit) {
    std::string a, b;
    if (mg.is_string()) {  // "a b" (tokenizers < 0.20)
      const std::string s = mg.get<std::string>();
      const size_t sp = s.find(' ', 1);
      BUPO_CHECK(sp != std::string::npos, src, ": model.merges[", rank, "]: expected \"a b\"");
      a = s.substr(0, sp);
      b = s.substr(sp + 1);
    } else {
      BUPO_CHECK(mg.is_array() && mg.size() == 2 && mg[0].is_string() && mg[1].is_string(), src,
                 ": model.merges[", rank, "]: expected [\"a\", \"b\"] or \"a b\"");
      a = mg[0].get<std::string>();
      b = mg[1].get<std::string>();
    }
    auto ia = t.vocab_.find(a), ib = t.vocab_.find(b), iab = t.vocab_.find(a + b);
    BUPO_CHECK(ia != t.vocab_.end() && ib != t.vocab_.end() && iab != t.vocab_.end(), src,
               ": model.merges[", rank, "]: '", a, "' + '", b,
               "' uses tokens missing from the vocabulary");
    const uint64_t key = (static_cast<uint64_t>(static_cast<uint32_t>(ia->second)) << 32) |
                         static_cast<uint32_t>(ib->second);
    t.merges_.emplace(key, std::make_pair(rank, iab->second));
    ++rank;
  }

  // normalizer
  auto norm = j.find("normalizer");
  if (norm != j.end() && !norm->is_null()) {
    const std::string nt = json_string_or(*norm, "type", src + ": normalizer", "");
    if (nt == "NFC")
      t.nfc_ = true;
    else
      fail(src, ": field 'normalizer.type': unsupported normalizer '", nt,
           "' (expected NFC or null)");
  }
  // pre-tokenizers
  auto pre = j.find("pre_tokenizer");
  BUPO_CHECK(pre != j.end() && pre->is_object(), src,
             ": field 'pre_tokenizer': expected an object");
  std::vector<json> steps;
  if (json_string_or(*pre, "type", src, "") == "Sequence") {
    auto list = pre->find("pretokenizers");
    BUPO_CHECK(list != pre->end() && list->is_array(), src,
               ": field 'pre_tokenizer.pretokenizers': expected an array (type is Sequence)");
    for (const auto& p : *list) steps.push_back(p);
  } else {
    steps.push_back(*pre);
  }
  bool byte_level = false;
  for (const auto& p : steps) {
    const std::string pt = json_string_or(p, "type", src + ": pre_tokenizer", "");
    auto step = std::make_unique<PreTokenizer>();
    if (pt == "Split") {
      const std::string behavior =
          json_string_or(p, "behavior", src + ": pre_tokenizer", "Isolated");
      BUPO_CHECK(
          behavior == "Isolated" && !json_bool_or(p, "invert", src, false), src,
          ": pre_tokenizer Split: only behavior 'Isolated' without invert is supported, got '",
          behavior, "'");
      auto pat = p.find("pattern");
      BUPO_CHECK(pat != p.end() && pat->is_object() && pat->contains("Regex") &&
                     pat->at("Regex").is_string(),
                 src, ": pre_tokenizer Split: expected pattern {\"Regex\": \"...\"}");
      step->kind = PreTokenizer::Kind::Split;
      step->re = compile_regex(pat->at("Regex").get<std::string>(), src);
    } else if (pt == "ByteLevel") {
      step->kind = PreTokenizer::Kind::ByteLevel;
      step->add_prefix_space = json_bool_or(p, "add_prefix_space", src, false);
      if (json_bool_or(p, "use_regex", src, true)) step->re = compile_regex(kGpt2Pattern, src);
      byte_level = true;
    } else if (pt == "Digits") {
      step->kind = PreTokenizer::Kind::Digits;
      step->individual_digits = json_bool_or(p, "individual_digits", src, false);
    } else {
      fail(src, ": pre_tokenizer type '", pt, "' is not supported (Split, ByteLevel, Digits)");
    }
    t.pre_.push_back(std::move(step));
  }
  BUPO_CHECK(byte_level, src,
             ": pre_tokenizer has no ByteLevel step: not a byte-level BPE tokenizer");
  return t;
}

// ---------------------------------------------------------------------------- encoding
void Tokenizer::bpe(std::string_view piece, std::vector<int32_t>& out) const {
  if (piece.empty()) return;
  if (ignore_merges_) {  // Llama 3: a word that is a whole token is taken as is
    std::string chars;
    for (unsigned char c : piece) chars += byte_to_char(c);
    if (auto it = vocab_.find(chars); it != vocab_.end()) {
      out.push_back(it->second);
      return;
    }
  }
  // The lowest-ranked adjacent pair merges first, the leftmost among equals (as HF tokenizers).
  // Symbols form a linked list; candidate pairs wait in a min-heap keyed by (rank, position), and
  // a popped pair whose symbols have changed since it was pushed is skipped: O(n log n) for a
  // piece of n bytes (rescanning all pairs per merge was O(n^2): 100,000 'a' took 52 s).
  struct Symbol {
    int32_t id;
    int32_t prev, next;  // -1: none
  };
  std::vector<Symbol> sym;
  sym.reserve(piece.size());
  for (unsigned char c : piece)
    if (byte_ids_[c] >= 0) {
      const auto i = static_cast<int32_t>(sym.size());
      sym.push_back({byte_ids_[c], i - 1, -1});
      if (i > 0) sym[static_cast<size_t>(i - 1)].next = i;
    }
  struct Candidate {
    int32_t rank, pos, left, right, merged;  // pair (left, right) at sym[pos], sym[pos].next
    bool operator>(const Candidate& o) const {
      return rank != o.rank ? rank > o.rank : pos > o.pos;
    }
  };
  std::vector<Candidate> heap;
  auto push = [&](int32_t pos) {
    if (pos < 0) return;
    const Symbol& a = sym[static_cast<size_t>(pos)];
    if (a.next < 0) return;
    const int32_t b = sym[static_cast<size_t>(a.next)].id;
    work::count();
    const uint64_t key =
        (static_cast<uint64_t>(static_cast<uint32_t>(a.id)) << 32) | static_cast<uint32_t>(b);
    auto it = merges_.find(key);
    if (it == merges_.end()) return;
    heap.push_back({it->second.first, pos, a.id, b, it->second.second});
    std::push_heap(heap.begin(), heap.end(), std::greater<>());
  };
  for (int32_t i = 0; i + 1 < static_cast<int32_t>(sym.size()); ++i) push(i);
  while (!heap.empty()) {
    std::pop_heap(heap.begin(), heap.end(), std::greater<>());
    const Candidate c = heap.back();
    heap.pop_back();
    work::count();
    Symbol& a = sym[static_cast<size_t>(c.pos)];
    if (a.id != c.left || a.next < 0 || sym[static_cast<size_t>(a.next)].id != c.right)
      continue;  // stale: one of its symbols merged since
    Symbol& b = sym[static_cast<size_t>(a.next)];
    a.id = c.merged;
    a.next = b.next;
    if (b.next >= 0) sym[static_cast<size_t>(b.next)].prev = c.pos;
    b.id = -1;  // dead: never matches a candidate again
    push(a.prev);
    push(c.pos);
  }
  for (int32_t i = sym.empty() ? -1 : 0; i >= 0; i = sym[static_cast<size_t>(i)].next)
    out.push_back(sym[static_cast<size_t>(i)].id);
}

void Tokenizer::encode_segment(std::string_view text, std::vector<int32_t>& out) const {
  if (text.empty()) return;
  std::vector<std::string> pieces(1);
  if (nfc_) {
    // with an explicit length (utf8proc_NFC stops at the first NUL, and the text after a NUL up
    // to the next special token was lost); NUL is a character like any other, as in HF
    utf8proc_uint8_t* n = nullptr;
    const utf8proc_ssize_t len =
        utf8proc_map(reinterpret_cast<const utf8proc_uint8_t*>(text.data()),
                     static_cast<utf8proc_ssize_t>(text.size()), &n,
                     static_cast<utf8proc_option_t>(UTF8PROC_STABLE | UTF8PROC_COMPOSE));
    BUPO_CHECK(len >= 0, "tokenizer: text is not valid UTF-8 (", utf8proc_errmsg(len), ")");
    pieces[0].assign(reinterpret_cast<char*>(n), static_cast<size_t>(len));
    std::free(n);
  } else {
    pieces[0] = std::string(text);
  }
  for (const auto& p : pre_) p->apply(pieces);
  for (const auto& p : pieces) bpe(p, out);
}

std::vector<int32_t> Tokenizer::encode(std::string_view text) const {
  std::vector<int32_t> out;
  size_t seg = 0, i = 0;
  while (i < text.size()) {
    const AddedToken* hit = nullptr;
    if (added_first_byte_[static_cast<unsigned char>(text[i])]) {
      for (const auto& a : added_)  // longest first
        if (text.compare(i, a.content.size(), a.content) == 0) {
          hit = &a;
          break;
        }
    }
    if (hit) {
      encode_segment(text.substr(seg, i - seg), out);
      out.push_back(hit->id);
      i += hit->content.size();
      seg = i;
    } else {
      ++i;
    }
  }
  encode_segment(text.substr(seg), out);
  return out;
}

// ---------------------------------------------------------------------------- decoding
std::optional<int32_t> Tokenizer::token_id(std::string_view token) const {
  auto it = vocab_.find(std::string(token));
  if (it == vocab_.end()) return std::nullopt;
  return it->second;
}
const std::string& Tokenizer::token(int32_t id) const {
  BUPO_CHECK(id >= 0 && id < vocab_size(), "tokenizer: id ", id, " outside the vocabulary [0, ",
             vocab_size(), ")");
  return id_to_token_[static_cast<size_t>(id)];
}
bool Tokenizer::is_special(int32_t id) const {
  return id >= 0 && id < vocab_size() && special_[static_cast<size_t>(id)];
}

std::string Tokenizer::token_bytes(int32_t id) const {
  const std::string& s = token(id);
  if (added_flag_[static_cast<size_t>(id)]) return s;  // added tokens decode to their content
  std::string bytes;
  const auto& tb = alphabet().to_byte;
  for (size_t i = 0; i < s.size();) {
    const auto c = static_cast<unsigned char>(s[i]);
    const size_t len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xE ? 3 : 4;
    auto it = tb.find(s.substr(i, len));
    if (it != tb.end())
      bytes += static_cast<char>(it->second);
    else
      bytes += s.substr(i, len);  // not a byte-level char: keep as is
    i += len;
  }
  return bytes;
}

std::string Tokenizer::decode(const std::vector<int32_t>& ids, bool skip_special) const {
  std::string out;
  for (int32_t id : ids)
    if (!(skip_special && is_special(id))) out += token_bytes(id);
  return out;
}

std::string StreamDecoder::push(int32_t id) {
  if (skip_special_ && tok_.is_special(id)) return {};
  pending_ += tok_.token_bytes(id);
  const size_t n = utf8_complete_prefix(pending_);
  std::string out = pending_.substr(0, n);
  pending_.erase(0, n);
  return out;
}

std::string StreamDecoder::flush() {
  std::string out;
  for (unsigned char c : pending_)
    out += c < 0x80 ? std::string(1, static_cast<char>(c)) : std::string("\xEF\xBF\xBD");
  pending_.clear();
  return out;
}

}  // namespace bupo
