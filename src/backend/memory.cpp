#include "backend/memory.hpp"

#include <algorithm>

#include "backend/backend.hpp"

namespace bupo {

const char* mem_role_name(MemRole r) {
  switch (r) {
    case MemRole::Params:
      return "parameters";
    case MemRole::Grads:
      return "gradients";
    case MemRole::OptState:
      return "optimizer state";
    case MemRole::Activations:
      return "activations";
    case MemRole::KVCache:
      return "KV cache";
    case MemRole::Scratch:
      return "scratch";
    default:
      return "?";
  }
}

// ---------------------------------------------------------------------------- Block
Block::~Block() {
  if (data_ != nullptr) be_->release_block(data_, bytes_, role_);
}

Block& Block::operator=(Block&& o) noexcept {
  if (this != &o) {
    if (data_ != nullptr) be_->release_block(data_, bytes_, role_);
    be_ = o.be_;
    role_ = o.role_;
    data_ = o.data_;
    bytes_ = o.bytes_;
    o.data_ = nullptr;
    o.bytes_ = 0;
  }
  return *this;
}

Tensor Block::view(DType t, Dims d, size_t byte_offset) const {
  const size_t need = byte_offset + static_cast<size_t>(d.numel()) * dtype_size(t);
  BUPO_CHECK(need <= bytes_, "memory block (", mem_role_name(role_), ", ", bytes_,
             " bytes): a view of ", d.str(), " ", dtype_name(t), " at ", byte_offset,
             " does not fit");
  return {static_cast<char*>(data_) + byte_offset, t, be_->device(), d};
}

// ---------------------------------------------------------------------------- Arena
namespace {
size_t round_up(size_t n, size_t a) {
  return (n + a - 1) / a * a;
}
}  // namespace

Tensor Arena::alloc(DType t, Dims d) {
  BUPO_CHECK(d.numel() >= 0, "arena: negative shape ", d.str());
  const size_t bytes =
      round_up(std::max<size_t>(1, static_cast<size_t>(d.numel()) * dtype_size(t)), kAlign);
  if (measuring_only()) {
    top_ += bytes;
    peak_ = std::max(peak_, top_);
    return {nullptr, t, Device::CPU, d};
  }
  // the segment holding top_, or the first one after it with room
  while (cur_ < segs_.size()) {
    const Segment& s = segs_[cur_];
    const size_t end = s.base + s.block.bytes();
    if (top_ < s.base) top_ = s.base;  // skip the unused tail of the previous segment
    if (top_ + bytes <= end) break;
    ++cur_;
  }
  if (cur_ == segs_.size()) {  // grow: a new block at the end of the virtual range
    const size_t base = segs_.empty() ? 0 : segs_.back().base + segs_.back().block.bytes();
    const size_t last = segs_.empty() ? 0 : segs_.back().block.bytes();
    segs_.push_back({be_->allocate(role_, std::max(bytes, last)), base});
    top_ = base;
  }
  const Segment& s = segs_[cur_];
  Tensor v = s.block.view(t, d, top_ - s.base);
  top_ += bytes;
  peak_ = std::max(peak_, top_);
  return v;
}

void Arena::release(size_t mark) {
  BUPO_CHECK(mark <= top_, "arena: release past the top (", mark, " > ", top_, ")");
  top_ = mark;
  if (measuring_only()) return;
  while (cur_ > 0 && segs_[cur_].base > top_) --cur_;
  if (top_ == 0 && segs_.size() > 1) coalesce();
}

void Arena::coalesce() {
  segs_.clear();  // frees every block
  segs_.push_back({be_->allocate(role_, peak_), 0});
  cur_ = 0;
}

void Arena::reserve(size_t bytes) {
  BUPO_CHECK(top_ == 0, "arena: reserve() while tensors are carved");
  if (measuring_only() || bytes <= capacity()) return;
  peak_ = std::max(peak_, round_up(bytes, kAlign));
  coalesce();
}

size_t Arena::capacity() const {
  size_t c = 0;
  for (const auto& s : segs_) c += s.block.bytes();
  return c;
}

// ---------------------------------------------------------------------------- ArenaPool
void ArenaLease::give_back() {
  if (arena_ && pool_ != nullptr) pool_->put_back(std::move(arena_));
  arena_.reset();
}

ArenaLease ArenaPool::lease(size_t need) {
  if (free_.empty()) {
    ++created_;
    return ArenaLease(this, std::make_unique<Arena>(be_, role_));
  }
  auto it = free_.end();
  for (auto f = free_.begin(); f != free_.end(); ++f)
    if ((*f)->capacity() >= need && (it == free_.end() || (*f)->capacity() < (*it)->capacity()))
      it = f;
  if (it == free_.end())
    it = std::max_element(free_.begin(), free_.end(), [](const auto& a, const auto& b) {
      return a->capacity() < b->capacity();
    });
  std::unique_ptr<Arena> a = std::move(*it);
  free_.erase(it);
  return ArenaLease(this, std::move(a));
}

void ArenaPool::put_back(std::unique_ptr<Arena> a) {
  a->reset();
  free_.push_back(std::move(a));
}

void ArenaPool::reserve(size_t bytes, size_t count) {
  while (free_.size() < count) {
    ++created_;
    free_.push_back(std::make_unique<Arena>(be_, role_));
  }
  std::sort(free_.begin(), free_.end(),
            [](const auto& a, const auto& b) { return a->capacity() > b->capacity(); });
  for (size_t i = 0; i < count; ++i) free_[i]->reserve(bytes);
}

}  // namespace bupo
