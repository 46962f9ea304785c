#include "io/h5.hpp"

#include <algorithm>
#include <filesystem>

#include "core/error.hpp"

namespace bupo::h5 {
namespace {
hid_t mem_type(Kind k) {
  switch (k) {
    case Kind::F32:
      return H5T_NATIVE_FLOAT;
    case Kind::I32:
      return H5T_NATIVE_INT32;
    case Kind::I64:
      return H5T_NATIVE_INT64;
  }
  return H5T_NATIVE_FLOAT;
}
hid_t file_type(Kind k) {
  switch (k) {
    case Kind::F32:
      return H5T_IEEE_F32LE;
    case Kind::I32:
      return H5T_STD_I32LE;
    case Kind::I64:
      return H5T_STD_I64LE;
  }
  return H5T_IEEE_F32LE;
}
std::string failed(const std::string& what) {
  const std::string d = error_detail();
  return "HDF5: " + what + " failed" + (d.empty() ? "" : " (" + d + ")");
}
void check(herr_t rc, const std::string& what) {
  if (rc < 0) fail(failed(what));
}
hid_t check_id(hid_t id, const std::string& what) {
  if (id < 0) fail(failed(what));
  return id;
}
struct SilenceErrors {
  SilenceErrors() {
    // A file whose close failed (a full disk) stays half-open inside HDF5, and the library's own
    // atexit cleanup then dies in it (SIGSEGV after the clear error). Every file is closed
    // explicitly, so that cleanup has nothing to do: skip it (must precede the library's start).
    H5dont_atexit();
    // HDF5 prints its own error stack by default; we report our own message
    H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr);
  }
};
const SilenceErrors kSilence;

herr_t collect_error(unsigned n, const H5E_error2_t* e, void* out) {
  auto& s = *static_cast<std::string*>(out);
  if (n < 2 && e->desc != nullptr && *e->desc != '\0') {  // the two innermost are the cause
    if (!s.empty()) s += "; ";
    s += e->desc;
  }
  return 0;
}

// File access: the 1.10 format both ways (SWMR needs superblock v3; pinning the upper bound keeps
// the files readable by every HDF5 >= 1.10, h5py's bundled library included).
Handle fapl_v110() {
  Handle fapl(check_id(H5Pcreate(H5P_FILE_ACCESS), "H5Pcreate"), H5Pclose);
  check(H5Pset_libver_bounds(fapl.id(), H5F_LIBVER_V110, H5F_LIBVER_V110), "H5Pset_libver_bounds");
  return fapl;
}

void write_attr(hid_t file, const std::string& obj, const std::string& name, hid_t ftype,
                hid_t mtype, const void* value) {
  Handle o(check_id(H5Oopen(file, obj.c_str(), H5P_DEFAULT), "open " + obj), H5Oclose);
  if (H5Aexists(o.id(), name.c_str()) > 0)
    check(H5Adelete(o.id(), name.c_str()), "delete attribute " + name);
  Handle sp(check_id(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
  Handle a(check_id(H5Acreate2(o.id(), name.c_str(), ftype, sp.id(), H5P_DEFAULT, H5P_DEFAULT),
                    "create attribute " + name),
           H5Aclose);
  check(H5Awrite(a.id(), mtype, value), "write attribute " + name);
}

Handle open_dataset(hid_t file, const std::string& path) {
  return Handle(check_id(H5Dopen2(file, path.c_str(), H5P_DEFAULT), "open dataset " + path),
                H5Dclose);
}
int dataset_dims(hid_t ds, hsize_t dims[2], const std::string& path) {
  Handle sp(check_id(H5Dget_space(ds), "H5Dget_space " + path), H5Sclose);
  const int rank = H5Sget_simple_extent_ndims(sp.id());
  BUPO_CHECK(rank == 1 || rank == 2, "HDF5: dataset ", path, " has rank ", rank,
             "; expected 1 or 2");
  H5Sget_simple_extent_dims(sp.id(), dims, nullptr);
  if (rank == 1) dims[1] = 0;
  return rank;
}
}  // namespace

std::string error_detail() {
  std::string s;
  H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, collect_error, &s);
  H5Eclear2(H5E_DEFAULT);
  return s;
}

File File::create(const std::string& path) {
  File f;
  f.path_ = path;
  Handle fapl = fapl_v110();
  f.file_ = Handle(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, fapl.id()), H5Fclose);
  if (f.file_.id() < 0) fail(path, ": cannot create HDF5 file: ", failed("H5Fcreate"));
  return f;
}

File File::open(const std::string& path, Access access) {
  File f;
  f.path_ = path;
  Handle fapl = fapl_v110();
  hid_t id = -1;
  switch (access) {
    case Access::Read:
      id = H5Fopen(path.c_str(), H5F_ACC_RDONLY, fapl.id());
      // held by a SWMR writer, or left so by one that died: SWMR reading sees its last flush.
      // A SWMR reader retries a metadata block whose checksum fails (the writer may be mid-write)
      // with a doubling sleep; after a writer died such a block stays bad, so give up soon.
      if (id < 0) {
        error_detail();
        check(H5Pset_metadata_read_attempts(fapl.id(), 8), "H5Pset_metadata_read_attempts");
        id = H5Fopen(path.c_str(), H5F_ACC_RDONLY | H5F_ACC_SWMR_READ, fapl.id());
      }
      break;
    case Access::Write:
      id = H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl.id());
      break;
    case Access::Repair: {
      // HDF5's own properties for h5clear (H5Fprivate.h; registered in every file-access list)
      const hbool_t yes = 1;
      for (const char* p : {"clear_status_flags", "skip_eof_check"})
        if (H5Pexist(fapl.id(), p) > 0)
          check(H5Pset(fapl.id(), p, &yes), "H5Pset " + std::string(p));
      id = H5Fopen(path.c_str(), H5F_ACC_RDWR, fapl.id());
      if (id >= 0 && H5Fincrement_filesize(id, 0) < 0) {
        const std::string why = failed("H5Fincrement_filesize");
        H5Fclose(id);
        fail(path, ": cannot repair the HDF5 file: ", why);
      }
      break;
    }
  }
  if (id < 0) fail(path, ": cannot open as HDF5: ", failed("H5Fopen"));
  f.file_ = Handle(id, H5Fclose);
  return f;
}

void File::close() {
  if (file_.id() < 0) return;
  const hid_t id = file_.release();
  check(H5Fclose(id), "close " + path_);
}

bool exists(hid_t file, const std::string& path) {
  // check every prefix: H5Lexists fails on a missing intermediate group
  size_t pos = 0;
  while (true) {
    pos = path.find('/', pos + 1);
    const std::string prefix = path.substr(0, pos);
    if (!prefix.empty() && prefix != "/" && H5Lexists(file, prefix.c_str(), H5P_DEFAULT) <= 0)
      return false;
    if (pos == std::string::npos) return true;
  }
}

namespace {
struct Visit {
  hid_t file;
  std::string base;
  std::vector<std::string> out;
};
herr_t visit_link(hid_t g, const char* name, const H5L_info_t*, void* data) {
  auto& v = *static_cast<Visit*>(data);
  const hid_t o = H5Oopen(g, name, H5P_DEFAULT);
  if (o < 0) return -1;  // a link that does not resolve: a damaged file
  const bool ds = H5Iget_type(o) == H5I_DATASET;
  H5Oclose(o);
  if (ds) v.out.push_back(v.base + name);
  return 0;
}
}  // namespace

std::vector<std::string> list_datasets(hid_t file, const std::string& group) {
  Handle g(check_id(H5Gopen2(file, group.c_str(), H5P_DEFAULT), "open group " + group), H5Gclose);
  Visit v{file, group == "/" ? "/" : group + "/", {}};
  check(H5Lvisit(g.id(), H5_INDEX_NAME, H5_ITER_INC, visit_link, &v), "visit " + group);
  return v.out;
}

void File::create_group(const std::string& name) {
  Handle g(check_id(H5Gcreate2(file_.id(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT),
                    "create group " + name),
           H5Gclose);
}
void File::set_attr(const std::string& obj, const std::string& name, const std::string& value) {
  Handle st(check_id(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
  check(H5Tset_size(st.id(), std::max<size_t>(1, value.size())), "H5Tset_size");
  write_attr(file_.id(), obj, name, st.id(), st.id(), value.c_str());
}
void File::set_attr(const std::string& obj, const std::string& name, int64_t value) {
  write_attr(file_.id(), obj, name, H5T_STD_I64LE, H5T_NATIVE_INT64, &value);
}
void File::set_attr(const std::string& obj, const std::string& name, double value) {
  write_attr(file_.id(), obj, name, H5T_IEEE_F64LE, H5T_NATIVE_DOUBLE, &value);
}
void File::update_attr(const std::string& obj, const std::string& name, int64_t value) {
  Handle a(
      check_id(H5Aopen_by_name(file_.id(), obj.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT),
               "open attribute " + obj + " " + name),
      H5Aclose);
  check(H5Awrite(a.id(), H5T_NATIVE_INT64, &value), "write attribute " + name);
}
void File::flush() {
  check(H5Fflush(file_.id(), H5F_SCOPE_GLOBAL), "flush " + path_);
}

namespace {
void set_description(hid_t ds, const std::string& description) {  // "" sets none
  if (description.empty()) return;
  Handle st(check_id(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
  check(H5Tset_size(st.id(), description.size()), "H5Tset_size");
  Handle asp(check_id(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
  Handle a(check_id(H5Acreate2(ds, "description", st.id(), asp.id(), H5P_DEFAULT, H5P_DEFAULT),
                    "create attribute description"),
           H5Aclose);
  check(H5Awrite(a.id(), st.id(), description.c_str()), "write attribute description");
}
// The dataset (intermediate groups created) with its description.
void create_dataset(hid_t file, const std::string& path, Kind kind, hid_t space, hid_t dcpl,
                    const std::string& description) {
  Handle lcpl(check_id(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate"), H5Pclose);
  check(H5Pset_create_intermediate_group(lcpl.id(), 1), "H5Pset_create_intermediate_group");
  Handle ds(
      check_id(H5Dcreate2(file, path.c_str(), file_type(kind), space, lcpl.id(), dcpl, H5P_DEFAULT),
               "create dataset " + path),
      H5Dclose);
  set_description(ds.id(), description);
}
}  // namespace

void create_rows(hid_t file, const std::string& path, Kind kind, int64_t cols, int64_t chunk_rows,
                 const std::string& description) {
  const int rank = cols > 0 ? 2 : 1;
  hsize_t dims[2] = {0, static_cast<hsize_t>(cols)};
  hsize_t maxdims[2] = {H5S_UNLIMITED, static_cast<hsize_t>(cols)};
  hsize_t chunk[2] = {static_cast<hsize_t>(std::max<int64_t>(1, chunk_rows)),
                      static_cast<hsize_t>(cols)};
  Handle sp(check_id(H5Screate_simple(rank, dims, maxdims), "H5Screate_simple"), H5Sclose);
  Handle dcpl(check_id(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
  check(H5Pset_chunk(dcpl.id(), rank, chunk), "H5Pset_chunk " + path);
  create_dataset(file, path, kind, sp.id(), dcpl.id(), description);
}

void create_fixed_rows(hid_t file, const std::string& path, Kind kind, int64_t rows, int64_t cols,
                       const std::string& description) {
  BUPO_CHECK(rows >= 0 && cols >= 0, "HDF5: fixed dataset ", path, " of ", rows, " x ", cols);
  const int rank = cols > 0 ? 2 : 1;
  const hsize_t dims[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(cols)};
  Handle sp(check_id(H5Screate_simple(rank, dims, nullptr), "H5Screate_simple"), H5Sclose);
  Handle dcpl(check_id(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
  check(H5Pset_layout(dcpl.id(), H5D_CONTIGUOUS), "H5Pset_layout " + path);
  check(H5Pset_alloc_time(dcpl.id(), H5D_ALLOC_TIME_EARLY), "H5Pset_alloc_time " + path);
  check(H5Pset_fill_time(dcpl.id(), H5D_FILL_TIME_NEVER), "H5Pset_fill_time " + path);
  create_dataset(file, path, kind, sp.id(), dcpl.id(), description);
}

RawLayout raw_layout(hid_t file, const std::string& path, Kind kind) {
  Handle ds = open_dataset(file, path);
  hsize_t dims[2];
  const int rank = dataset_dims(ds.id(), dims, path);
  Handle dcpl(check_id(H5Dget_create_plist(ds.id()), "H5Dget_create_plist " + path), H5Pclose);
  BUPO_CHECK(H5Pget_layout(dcpl.id()) == H5D_CONTIGUOUS && H5Pget_nfilters(dcpl.id()) == 0,
             "HDF5: dataset ", path, " is not contiguous and unfiltered (not a fixed dataset)");
  Handle ty(check_id(H5Dget_type(ds.id()), "H5Dget_type " + path), H5Tclose);
  BUPO_CHECK(H5Tequal(ty.id(), file_type(kind)) > 0, "HDF5: dataset ", path,
             " does not have the little-endian type its writer expects");
  RawLayout r;
  r.rows = static_cast<int64_t>(dims[0]);
  r.cols = rank == 2 ? static_cast<int64_t>(dims[1]) : 0;
  r.row_bytes = static_cast<size_t>(std::max<int64_t>(r.cols, 1)) * H5Tget_size(ty.id());
  if (r.rows == 0 || r.row_bytes == 0) return r;
  const haddr_t off = H5Dget_offset(ds.id());
  BUPO_CHECK(off != HADDR_UNDEF, "HDF5: dataset ", path, " has no storage allocated");
  BUPO_CHECK(H5Dget_storage_size(ds.id()) == static_cast<hsize_t>(r.rows) * r.row_bytes,
             "HDF5: dataset ", path, " has a storage size other than rows x row bytes");
  r.offset = static_cast<uint64_t>(off);
  return r;
}

void append_rows(hid_t file, const std::string& path, Kind kind, const void* data, int64_t rows) {
  if (rows <= 0) return;
  Handle ds = open_dataset(file, path);
  hsize_t dims[2];
  const int rank = dataset_dims(ds.id(), dims, path);
  hsize_t newdims[2] = {dims[0] + static_cast<hsize_t>(rows), dims[1]};
  check(H5Dset_extent(ds.id(), newdims), "extend " + path);
  Handle fsp(check_id(H5Dget_space(ds.id()), "H5Dget_space"), H5Sclose);
  hsize_t start[2] = {dims[0], 0};
  hsize_t count[2] = {static_cast<hsize_t>(rows), dims[1]};
  check(H5Sselect_hyperslab(fsp.id(), H5S_SELECT_SET, start, nullptr, count, nullptr),
        "select " + path);
  Handle msp(check_id(H5Screate_simple(rank, count, nullptr), "H5Screate_simple"), H5Sclose);
  check(H5Dwrite(ds.id(), mem_type(kind), msp.id(), fsp.id(), H5P_DEFAULT, data), "write " + path);
}

void truncate_rows(hid_t file, const std::string& path, int64_t rows) {
  Handle ds = open_dataset(file, path);
  hsize_t dims[2];
  dataset_dims(ds.id(), dims, path);
  if (static_cast<hsize_t>(std::max<int64_t>(0, rows)) >= dims[0]) return;
  dims[0] = static_cast<hsize_t>(std::max<int64_t>(0, rows));
  check(H5Dset_extent(ds.id(), dims), "truncate " + path);
}

std::vector<int64_t> dataset_shape(hid_t file, const std::string& path) {
  Handle ds = open_dataset(file, path);
  Handle sp(check_id(H5Dget_space(ds.id()), "H5Dget_space"), H5Sclose);
  hsize_t dims[8];
  const int rank = H5Sget_simple_extent_dims(sp.id(), dims, nullptr);
  BUPO_CHECK(rank >= 0 && rank <= 8, "HDF5: dataset ", path, " has an unreadable shape");
  return std::vector<int64_t>(dims, dims + rank);
}
Kind dataset_kind(hid_t file, const std::string& path) {
  Handle ds = open_dataset(file, path);
  Handle t(check_id(H5Dget_type(ds.id()), "H5Dget_type " + path), H5Tclose);
  if (H5Tget_class(t.id()) == H5T_FLOAT) return Kind::F32;
  return H5Tget_size(t.id()) == 4 ? Kind::I32 : Kind::I64;
}
namespace {
template <typename T>
std::vector<T> read_all(hid_t file, const std::string& path, hid_t mtype) {
  int64_t n = 1;
  for (int64_t d : dataset_shape(file, path)) n *= d;
  std::vector<T> out(static_cast<size_t>(n));
  Handle ds = open_dataset(file, path);
  if (n > 0)
    check(H5Dread(ds.id(), mtype, H5S_ALL, H5S_ALL, H5P_DEFAULT, out.data()), "read " + path);
  return out;
}
}  // namespace
std::vector<float> read_f32(hid_t file, const std::string& path) {
  return read_all<float>(file, path, H5T_NATIVE_FLOAT);
}
std::vector<int64_t> read_i64(hid_t file, const std::string& path) {
  return read_all<int64_t>(file, path, H5T_NATIVE_INT64);
}
std::string read_attr_string(hid_t file, const std::string& obj, const std::string& name) {
  Handle a(check_id(H5Aopen_by_name(file, obj.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT),
                    "open attr " + name),
           H5Aclose);
  Handle t(check_id(H5Aget_type(a.id()), "H5Aget_type"), H5Tclose);
  std::string s(H5Tget_size(t.id()), '\0');
  check(H5Aread(a.id(), t.id(), s.data()), "read attr " + name);
  while (!s.empty() && s.back() == '\0') s.pop_back();
  return s;
}
int64_t read_attr_int(hid_t file, const std::string& obj, const std::string& name) {
  Handle a(check_id(H5Aopen_by_name(file, obj.c_str(), name.c_str(), H5P_DEFAULT, H5P_DEFAULT),
                    "open attr " + name),
           H5Aclose);
  int64_t v = 0;
  check(H5Aread(a.id(), H5T_NATIVE_INT64, &v), "read attr " + name);
  return v;
}
bool attr_exists(hid_t file, const std::string& obj, const std::string& name) {
  return H5Aexists_by_name(file, obj.c_str(), name.c_str(), H5P_DEFAULT) > 0;
}

}  // namespace bupo::h5
