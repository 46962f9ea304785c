#include "io/gguf.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstring>

#include "core/error.hpp"
#include "io/dtype.hpp"

namespace bupo {
namespace {

struct TypeInfo {
  uint32_t type;
  const char* name;
  uint64_t block;  // values per block
  uint64_t bytes;  // bytes per block
};
constexpr TypeInfo kTypes[] = {
    {0, "F32", 1, 4},       {1, "F16", 1, 2},       {2, "Q4_0", 32, 18},
    {3, "Q4_1", 32, 20},    {8, "Q8_0", 32, 34},    {12, "Q4_K", 256, 144},
    {13, "Q5_K", 256, 176}, {14, "Q6_K", 256, 210}, {30, "BF16", 1, 2},
};
const TypeInfo* type_info(uint32_t t) {
  for (const auto& i : kTypes)
    if (i.type == t) return &i;
  return nullptr;
}

// Bounds-checked little-endian cursor over the mapped file.
class Cursor {
 public:
  Cursor(const uint8_t* p, uint64_t n, const std::string& src) : p_(p), n_(n), src_(src) {}
  uint64_t pos() const { return pos_; }
  void need(uint64_t k, const char* what) const {
    BUPO_CHECK(k <= n_ - pos_, src_, ": truncated GGUF file: ", what, " needs ", k,
               " bytes at offset ", pos_, " but the file has ", n_, " bytes");
  }
  template <typename T>
  T read(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + pos_, sizeof(T));
    pos_ += sizeof(T);
    return v;
  }
  std::string str(const char* what) {
    const uint64_t len = read<uint64_t>(what);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + pos_), static_cast<size_t>(len));
    pos_ += len;
    return s;
  }
  void skip(uint64_t k, const char* what) {
    need(k, what);
    pos_ += k;
  }

 private:
  const uint8_t* p_;
  uint64_t n_, pos_ = 0;
  const std::string& src_;
};

enum : uint32_t { U8 = 0, I8, U16, I16, U32, I32, F32v, BOOLv, STR, ARR, U64, I64, F64 };

uint64_t scalar_size(uint32_t t) {
  switch (t) {
    case U8:
    case I8:
    case BOOLv:
      return 1;
    case U16:
    case I16:
      return 2;
    case U32:
    case I32:
    case F32v:
      return 4;
    case U64:
    case I64:
    case F64:
      return 8;
    default:
      return 0;
  }
}

double read_number(Cursor& c, uint32_t t, bool* is_float, bool* is_unsigned) {
  *is_float = false;
  *is_unsigned = false;
  switch (t) {
    case U8:
      *is_unsigned = true;
      return c.read<uint8_t>("value");
    case I8:
      return c.read<int8_t>("value");
    case U16:
      *is_unsigned = true;
      return c.read<uint16_t>("value");
    case I16:
      return c.read<int16_t>("value");
    case U32:
      *is_unsigned = true;
      return c.read<uint32_t>("value");
    case I32:
      return c.read<int32_t>("value");
    case F32v:
      *is_float = true;
      return c.read<float>("value");
    case BOOLv:
      return c.read<uint8_t>("value");
    case F64:
      *is_float = true;
      return c.read<double>("value");
    default:
      return 0;
  }
}

GgufValue read_value(Cursor& c, uint32_t t, const std::string& where, int depth) {
  GgufValue v;
  bool fl = false, un = false;
  switch (t) {
    case STR:
      v.v = c.str("string value");
      return v;
    case U64:
      v.v = c.read<uint64_t>("value");
      return v;
    case I64:
      v.v = c.read<int64_t>("value");
      return v;
    case BOOLv:
      v.v = c.read<uint8_t>("value") != 0;
      return v;
    case ARR: {
      BUPO_CHECK(depth == 0, where, ": nested arrays are not supported");
      const uint32_t et = c.read<uint32_t>("array type");
      const uint64_t n = c.read<uint64_t>("array length");
      if (et == STR) {
        // each string needs at least its 8-byte length: bound n before reserving
        c.need(n > UINT64_MAX / 8 ? UINT64_MAX : n * 8, "string array");
        std::vector<std::string> s;
        s.reserve(static_cast<size_t>(n));
        for (uint64_t i = 0; i < n; ++i) s.push_back(c.str("array string"));
        v.v = std::move(s);
        return v;
      }
      const uint64_t es = scalar_size(et);
      BUPO_CHECK(es > 0, where, ": array of unsupported element type ", et);
      BUPO_CHECK(n <= UINT64_MAX / es, where, ": array length ", n, " overflows");
      c.need(n * es, "array data");
      if (et == F32v || et == F64) {
        std::vector<double> d(static_cast<size_t>(n));
        for (auto& x : d) x = read_number(c, et, &fl, &un);
        v.v = std::move(d);
      } else {
        std::vector<int64_t> d(static_cast<size_t>(n));
        for (auto& x : d)
          x = et == U64   ? static_cast<int64_t>(c.read<uint64_t>("value"))
              : et == I64 ? c.read<int64_t>("value")
                          : static_cast<int64_t>(read_number(c, et, &fl, &un));
        v.v = std::move(d);
      }
      return v;
    }
    default: {
      BUPO_CHECK(scalar_size(t) > 0, where, ": unknown value type ", t);
      const double x = read_number(c, t, &fl, &un);
      if (fl)
        v.v = x;
      else
        v.v = static_cast<int64_t>(x);
      return v;
    }
  }
}

inline float h2f(const uint8_t* p) {
  uint16_t h;
  std::memcpy(&h, p, 2);
  return f16_to_f32(h);
}
inline void scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

}  // namespace

const char* ggml_type_name(uint32_t t) {
  const TypeInfo* i = type_info(t);
  return i ? i->name : "unsupported";
}

uint64_t ggml_row_bytes(uint32_t type, uint64_t n, bool* ok) {
  const TypeInfo* i = type_info(type);
  *ok = i != nullptr && n % i->block == 0 && n / i->block <= UINT64_MAX / i->bytes;
  return *ok ? n / i->block * i->bytes : 0;
}

void dequantize_row(uint32_t type, const uint8_t* x, float* y, uint64_t n) {
  switch (type) {
    case 0:
      std::memcpy(y, x, n * 4);
      return;
    case 1:
      for (uint64_t i = 0; i < n; ++i) y[i] = h2f(x + 2 * i);
      return;
    case 30:
      for (uint64_t i = 0; i < n; ++i) {
        uint16_t h;
        std::memcpy(&h, x + 2 * i, 2);
        y[i] = bf16_to_f32(h);
      }
      return;
    case 8:  // Q8_0: d (f16), qs[32] int8
      for (uint64_t b = 0; b < n / 32; ++b, x += 34, y += 32) {
        const float d = h2f(x);
        for (int j = 0; j < 32; ++j) y[j] = d * static_cast<float>(static_cast<int8_t>(x[2 + j]));
      }
      return;
    case 2:  // Q4_0: d, qs[16]; low nibbles are values 0..15, high nibbles 16..31, offset 8
      for (uint64_t b = 0; b < n / 32; ++b, x += 18, y += 32) {
        const float d = h2f(x);
        for (int j = 0; j < 16; ++j) {
          y[j] = d * static_cast<float>((x[2 + j] & 0xF) - 8);
          y[j + 16] = d * static_cast<float>((x[2 + j] >> 4) - 8);
        }
      }
      return;
    case 3:  // Q4_1: d, m, qs[16]
      for (uint64_t b = 0; b < n / 32; ++b, x += 20, y += 32) {
        const float d = h2f(x), m = h2f(x + 2);
        for (int j = 0; j < 16; ++j) {
          y[j] = d * static_cast<float>(x[4 + j] & 0xF) + m;
          y[j + 16] = d * static_cast<float>(x[4 + j] >> 4) + m;
        }
      }
      return;
    case 12:  // Q4_K: d, dmin, scales[12], qs[128]
      for (uint64_t b = 0; b < n / 256; ++b, x += 144) {
        const float d = h2f(x), dmin = h2f(x + 2);
        const uint8_t* sc = x + 4;
        const uint8_t* q = x + 16;
        for (int j = 0, is = 0; j < 256; j += 64, is += 2, q += 32) {
          uint8_t s, m;
          scale_min_k4(is, sc, &s, &m);
          const float d1 = d * s, m1 = dmin * m;
          scale_min_k4(is + 1, sc, &s, &m);
          const float d2 = d * s, m2 = dmin * m;
          for (int l = 0; l < 32; ++l) *y++ = d1 * static_cast<float>(q[l] & 0xF) - m1;
          for (int l = 0; l < 32; ++l) *y++ = d2 * static_cast<float>(q[l] >> 4) - m2;
        }
      }
      return;
    case 13:  // Q5_K: d, dmin, scales[12], qh[32], qs[128]
      for (uint64_t b = 0; b < n / 256; ++b, x += 176) {
        const float d = h2f(x), dmin = h2f(x + 2);
        const uint8_t* sc = x + 4;
        const uint8_t* qh = x + 16;
        const uint8_t* ql = x + 48;
        uint8_t u1 = 1, u2 = 2;
        for (int j = 0, is = 0; j < 256; j += 64, is += 2, ql += 32) {
          uint8_t s, m;
          scale_min_k4(is, sc, &s, &m);
          const float d1 = d * s, m1 = dmin * m;
          scale_min_k4(is + 1, sc, &s, &m);
          const float d2 = d * s, m2 = dmin * m;
          for (int l = 0; l < 32; ++l)
            *y++ = d1 * static_cast<float>((ql[l] & 0xF) + (qh[l] & u1 ? 16 : 0)) - m1;
          for (int l = 0; l < 32; ++l)
            *y++ = d2 * static_cast<float>((ql[l] >> 4) + (qh[l] & u2 ? 16 : 0)) - m2;
          u1 = static_cast<uint8_t>(u1 << 2);
          u2 = static_cast<uint8_t>(u2 << 2);
        }
      }
      return;
    case 14:  // Q6_K: ql[128], qh[64], scales[16] int8, d
      for (uint64_t b = 0; b < n / 256; ++b, x += 210) {
        const uint8_t* ql = x;
        const uint8_t* qh = x + 128;
        const auto* sc = reinterpret_cast<const int8_t*>(x + 192);
        const float d = h2f(x + 208);
        for (int half = 0; half < 2; ++half, y += 128, ql += 64, qh += 32, sc += 8) {
          for (int l = 0; l < 32; ++l) {
            const int is = l / 16;
            const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
            const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
            const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
            const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
            y[l] = d * sc[is] * static_cast<float>(q1);
            y[l + 32] = d * sc[is + 2] * static_cast<float>(q2);
            y[l + 64] = d * sc[is + 4] * static_cast<float>(q3);
            y[l + 96] = d * sc[is + 6] * static_cast<float>(q4);
          }
        }
      }
      return;
    default:
      fail("GGUF: dequantisation of type ", ggml_type_name(type), " (", type, ") is not supported");
  }
}

Shape GgufTensorInfo::torch_shape() const {
  Shape s;
  for (auto it = ne.rbegin(); it != ne.rend(); ++it) s.push_back(static_cast<int64_t>(*it));
  return s;
}
uint64_t GgufTensorInfo::numel() const {
  uint64_t n = 1;
  for (uint64_t d : ne) n *= d;  // checked at parse time
  return n;
}

std::unique_ptr<GgufFile> GgufFile::open(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  BUPO_CHECK(fd >= 0, path, ": cannot open file");
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path, ": not a regular file");
  }
  const auto size = static_cast<uint64_t>(st.st_size);
  if (size < 8) {
    ::close(fd);
    fail(path, ": truncated GGUF file (", size, " bytes)");
  }
  void* map = ::mmap(nullptr, size, PROT_READ, MAP_PRIVATE, fd, 0);
  if (map == MAP_FAILED) {
    ::close(fd);
    fail(path, ": mmap failed");
  }
  std::unique_ptr<GgufFile> f;
  try {
    f = parse(static_cast<const uint8_t*>(map), size, path);
  } catch (...) {
    ::munmap(map, size);
    ::close(fd);
    throw;
  }
  f->fd_ = fd;
  f->map_ = map;
  return f;
}

std::unique_ptr<GgufFile> GgufFile::parse(const uint8_t* data, uint64_t size,
                                          const std::string& name) {
  std::unique_ptr<GgufFile> f(new GgufFile());
  f->path_ = name;
  f->base_ = data;
  f->size_ = size;
  const std::string& src = f->path_;
  Cursor c(data, size, src);
  const uint32_t magic = c.read<uint32_t>("magic");
  BUPO_CHECK(magic == 0x46554747u, src, ": not a GGUF file (bad magic)");
  f->version_ = c.read<uint32_t>("version");
  BUPO_CHECK(f->version_ == 2 || f->version_ == 3, src, ": GGUF version ", f->version_,
             " (expected 2 or 3)");
  const uint64_t n_tensors = c.read<uint64_t>("tensor count");
  const uint64_t n_kv = c.read<uint64_t>("metadata count");
  // every KV needs >= 12 bytes and every tensor info >= 24: reject absurd counts before looping
  BUPO_CHECK(n_kv <= size / 12 && n_tensors <= size / 24, src, ": metadata count ", n_kv,
             " or tensor count ", n_tensors, " impossible for a file of ", size, " bytes");
  for (uint64_t i = 0; i < n_kv; ++i) {
    std::string key = c.str("metadata key");
    const uint32_t t = c.read<uint32_t>("metadata type");
    const std::string where = src + ": metadata '" + key + "'";
    f->kv_[key] = read_value(c, t, where, 0);
  }
  uint64_t align = 32;
  if (auto it = f->kv_.find("general.alignment"); it != f->kv_.end()) {
    const auto* a = std::get_if<int64_t>(&it->second.v);
    BUPO_CHECK(a && *a > 0 && *a <= 65536 && (*a & (*a - 1)) == 0, src,
               ": metadata 'general.alignment': expected a power of two <= 65536");
    align = static_cast<uint64_t>(*a);
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = c.str("tensor name");
    const std::string where = src + ": tensor '" + t.name + "'";
    const uint32_t nd = c.read<uint32_t>("tensor dims");
    BUPO_CHECK(nd >= 1 && nd <= 4, where, ": ", nd, " dimensions (expected 1 to 4)");
    uint64_t numel = 1;
    for (uint32_t k = 0; k < nd; ++k) {
      const uint64_t d = c.read<uint64_t>("tensor dim");
      BUPO_CHECK(d > 0 && d < (1ull << 40) && !__builtin_mul_overflow(numel, d, &numel), where,
                 ": dimension ", d, " is zero or overflows");
      t.ne.push_back(d);
    }
    t.type = c.read<uint32_t>("tensor type");
    t.offset = c.read<uint64_t>("tensor offset");
    bool ok = false;
    t.nbytes = ggml_row_bytes(t.type, numel, &ok);
    BUPO_CHECK(type_info(t.type) != nullptr, where, ": tensor type ", t.type, " (",
               ggml_type_name(t.type),
               ") is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q4_K, Q5_K, Q6_K)");
    BUPO_CHECK(ok && t.ne[0] % type_info(t.type)->block == 0, where, ": row length ", t.ne[0],
               " is not a multiple of the ", ggml_type_name(t.type), " block size");
    BUPO_CHECK(t.offset % align == 0, where, ": offset ", t.offset, " is not aligned to ", align);
    f->tensors_.push_back(std::move(t));
  }
  const uint64_t pos = c.pos();
  f->data_start_ = (pos + align - 1) / align * align;
  BUPO_CHECK(f->data_start_ <= size, src,
             ": truncated GGUF file: the data section starts beyond the end");
  const uint64_t data_size = size - f->data_start_;
  for (const auto& t : f->tensors_)
    BUPO_CHECK(t.offset <= data_size && t.nbytes <= data_size - t.offset, src, ": tensor '", t.name,
               "': bytes [", t.offset, ", +", t.nbytes, ") lie outside the data section (",
               data_size, " bytes): truncated file?");
  return f;
}

GgufFile::~GgufFile() {
  if (map_) ::munmap(map_, size_);
  if (fd_ >= 0) ::close(fd_);
}

const GgufTensorInfo* GgufFile::find_tensor(const std::string& name) const {
  for (const auto& t : tensors_)
    if (t.name == name) return &t;
  return nullptr;
}

void GgufFile::dequantize(const GgufTensorInfo& t, float* out) const {
  dequantize_row(t.type, base_ + data_start_ + t.offset, out, t.numel());
}

namespace {
const GgufValue& get(const std::map<std::string, GgufValue>& kv, const std::string& key,
                     const std::string& src) {
  auto it = kv.find(key);
  BUPO_CHECK(it != kv.end(), src, ": metadata '", key, "' is missing");
  return it->second;
}
}  // namespace

int64_t GgufFile::get_int(const std::string& key) const {
  const auto& v = get(kv_, key, path_).v;
  if (const auto* i = std::get_if<int64_t>(&v)) return *i;
  if (const auto* b = std::get_if<bool>(&v)) return *b ? 1 : 0;
  if (const auto* u = std::get_if<uint64_t>(&v)) {
    BUPO_CHECK(*u <= static_cast<uint64_t>(INT64_MAX), path_, ": metadata '", key,
               "' out of range");
    return static_cast<int64_t>(*u);
  }
  fail(path_, ": metadata '", key, "': expected an integer");
}
int64_t GgufFile::get_int_or(const std::string& key, int64_t fallback) const {
  return has(key) ? get_int(key) : fallback;
}
double GgufFile::get_float_or(const std::string& key, double fallback) const {
  if (!has(key)) return fallback;
  const auto& v = kv_.at(key).v;
  if (const auto* d = std::get_if<double>(&v)) return *d;
  if (const auto* i = std::get_if<int64_t>(&v)) return static_cast<double>(*i);
  fail(path_, ": metadata '", key, "': expected a number");
}
std::string GgufFile::get_string(const std::string& key) const {
  const auto* s = std::get_if<std::string>(&get(kv_, key, path_).v);
  BUPO_CHECK(s != nullptr, path_, ": metadata '", key, "': expected a string");
  return *s;
}
std::string GgufFile::get_string_or(const std::string& key, const std::string& fallback) const {
  return has(key) ? get_string(key) : fallback;
}
const std::vector<std::string>& GgufFile::get_strings(const std::string& key) const {
  const auto* s = std::get_if<std::vector<std::string>>(&get(kv_, key, path_).v);
  BUPO_CHECK(s != nullptr, path_, ": metadata '", key, "': expected an array of strings");
  return *s;
}
std::vector<int64_t> GgufFile::get_ints(const std::string& key) const {
  const auto* s = std::get_if<std::vector<int64_t>>(&get(kv_, key, path_).v);
  BUPO_CHECK(s != nullptr, path_, ": metadata '", key, "': expected an array of integers");
  return *s;
}

}  // namespace bupo
