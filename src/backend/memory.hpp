// Device memory by role (llm.c's discipline: a few large allocations, none inside the step loop).
//   Block      one allocation of a backend's memory for one role, freed on destruction
//   Arena      a bump allocator over blocks: tensors are carved in order and released LIFO
//              (mark/release). When a carve does not fit it adds a block; once everything is
//              released it replaces its blocks by one block of the high-water size, so a loop
//              whose shapes repeat stops allocating after its first pass. reserve() sizes it
//              up-front from a plan (Model::plan_*), so that even the first pass does not grow.
//   ArenaPool  arenas handed out by lease (the activations of one forward, one KV cache) and
//              returned, with their blocks, when the lease ends — the next forward reuses them.
// Every block allocation is counted per role (Backend::counters): the test that the step loop
// allocates nothing reads these counters.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <vector>

#include "backend/tensor.hpp"

namespace bupo {

class Backend;

enum class MemRole : uint8_t { Params, Grads, OptState, Activations, KVCache, Scratch, kCount };
const char* mem_role_name(MemRole r);
constexpr size_t kMemRoles = static_cast<size_t>(MemRole::kCount);

struct MemCounters {
  uint64_t allocations = 0, frees = 0;
  uint64_t bytes_live = 0, bytes_peak = 0;
};

class Block {
 public:
  Block() = default;
  Block(Backend* be, MemRole role, void* p, size_t bytes)
      : be_(be), role_(role), data_(p), bytes_(bytes) {}
  ~Block();
  Block(Block&& o) noexcept { *this = std::move(o); }
  Block& operator=(Block&& o) noexcept;
  Block(const Block&) = delete;
  Block& operator=(const Block&) = delete;

  void* data() const { return data_; }
  size_t bytes() const { return bytes_; }
  MemRole role() const { return role_; }
  // A view of `d` elements of dtype `t` starting `byte_offset` bytes into the block.
  Tensor view(DType t, Dims d, size_t byte_offset = 0) const;

 private:
  Backend* be_ = nullptr;
  MemRole role_ = MemRole::Scratch;
  void* data_ = nullptr;
  size_t bytes_ = 0;
};

class Arena {
 public:
  static constexpr size_t kAlign = 256;  // every carve: cuBLASLt/cuDNN want 16, coalescing 128+
  Arena(Backend& be, MemRole role) : be_(&be), role_(role) {}
  // An arena that only measures: carves return views with null data; high_water() is the plan.
  static Arena measuring() { return Arena(); }

  Tensor alloc(DType t, Dims d);
  Tensor alloc_f32(Dims d) { return alloc(DType::F32, d); }
  size_t mark() const { return top_; }
  void release(size_t mark);
  void reset() { release(0); }
  // With nothing carved: one block of at least `bytes` (no-op when it already has one).
  void reserve(size_t bytes);

  size_t capacity() const;
  size_t used() const { return top_; }
  size_t high_water() const { return peak_; }
  MemRole role() const { return role_; }
  bool measuring_only() const { return be_ == nullptr; }

 private:
  Arena() = default;
  struct Segment {
    Block block;
    size_t base = 0;  // virtual offset of the block's first byte
  };
  Backend* be_ = nullptr;
  MemRole role_ = MemRole::Scratch;
  std::vector<Segment> segs_;
  size_t cur_ = 0;  // segment holding top_
  size_t top_ = 0, peak_ = 0;
  void coalesce();
};

// Releases everything carved after its construction when it goes out of scope.
class ArenaScope {
 public:
  explicit ArenaScope(Arena& a) : a_(a), mark_(a.mark()) {}
  ~ArenaScope() { a_.release(mark_); }
  ArenaScope(const ArenaScope&) = delete;
  ArenaScope& operator=(const ArenaScope&) = delete;

 private:
  Arena& a_;
  size_t mark_;
};

class ArenaPool;

// Exclusive use of one arena of a pool until the lease ends (or is moved from).
class ArenaLease {
 public:
  ArenaLease() = default;
  ArenaLease(ArenaPool* pool, std::unique_ptr<Arena> a) : pool_(pool), arena_(std::move(a)) {}
  ~ArenaLease() { give_back(); }
  ArenaLease(ArenaLease&& o) noexcept = default;
  ArenaLease& operator=(ArenaLease&& o) noexcept {
    if (this != &o) {
      give_back();
      pool_ = o.pool_;
      arena_ = std::move(o.arena_);
    }
    return *this;
  }
  explicit operator bool() const { return arena_ != nullptr; }
  Arena& operator*() const { return *arena_; }
  Arena* operator->() const { return arena_.get(); }
  void give_back();

 private:
  ArenaPool* pool_ = nullptr;
  std::unique_ptr<Arena> arena_;
};

class ArenaPool {
 public:
  ArenaPool(Backend& be, MemRole role) : be_(be), role_(role) {}
  // The free arena that fits `need` bytes most tightly; when none fits, the largest free one
  // (which grows once); a new arena when none is free. Best fit keeps the roles of reused arenas
  // stable from one pass to the next.
  ArenaLease lease(size_t need = 0);
  // At least `count` arenas with `bytes` of capacity each, ready for lease.
  void reserve(size_t bytes, size_t count);
  size_t arenas() const { return created_; }
  void clear() { free_.clear(); }  // frees the blocks of every free arena

 private:
  friend class ArenaLease;
  void put_back(std::unique_ptr<Arena> a);
  Backend& be_;
  MemRole role_;
  std::vector<std::unique_ptr<Arena>> free_;
  size_t created_ = 0;
};

}  // namespace bupo
