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
void check(herr_t rc, const std::string& what) {
  BUPO_CHECK(rc >= 0, "HDF5: ", what, " failed");
}
hid_t check_id(hid_t id, const std::string& what) {
  BUPO_CHECK(id >= 0, "HDF5: ", what, " failed");
  return id;
}
struct SilenceErrors {  // HDF5 prints its own error stack by default; we report our own message
  SilenceErrors() { H5Eset_auto2(H5E_DEFAULT, nullptr, nullptr); }
};
const SilenceErrors kSilence;

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
}  // namespace

RowDataset::RowDataset(hid_t loc, const std::string& path, Kind kind, int64_t cols,
                       int64_t chunk_rows, const std::string& description)
    : kind_(kind), cols_(cols), path_(path) {
  const int rank = cols > 0 ? 2 : 1;
  hsize_t dims[2] = {0, static_cast<hsize_t>(cols)};
  hsize_t maxdims[2] = {H5S_UNLIMITED, static_cast<hsize_t>(cols)};
  hsize_t chunk[2] = {static_cast<hsize_t>(std::max<int64_t>(1, chunk_rows)),
                      static_cast<hsize_t>(cols)};
  Handle sp(check_id(H5Screate_simple(rank, dims, maxdims), "H5Screate_simple"), H5Sclose);
  Handle dcpl(check_id(H5Pcreate(H5P_DATASET_CREATE), "H5Pcreate"), H5Pclose);
  check(H5Pset_chunk(dcpl.id(), rank, chunk), "H5Pset_chunk " + path);
  check(H5Pset_shuffle(dcpl.id()), "H5Pset_shuffle");
  check(H5Pset_deflate(dcpl.id(), 4), "H5Pset_deflate");
  Handle lcpl(check_id(H5Pcreate(H5P_LINK_CREATE), "H5Pcreate"), H5Pclose);
  check(H5Pset_create_intermediate_group(lcpl.id(), 1), "H5Pset_create_intermediate_group");
  ds_ = Handle(check_id(H5Dcreate2(loc, path.c_str(), file_type(kind), sp.id(), lcpl.id(),
                                   dcpl.id(), H5P_DEFAULT),
                        "create dataset " + path),
               H5Dclose);
  if (!description.empty()) {
    Handle st(check_id(H5Tcopy(H5T_C_S1), "H5Tcopy"), H5Tclose);
    check(H5Tset_size(st.id(), description.size()), "H5Tset_size");
    Handle asp(check_id(H5Screate(H5S_SCALAR), "H5Screate"), H5Sclose);
    Handle a(
        check_id(H5Acreate2(ds_.id(), "description", st.id(), asp.id(), H5P_DEFAULT, H5P_DEFAULT),
                 "create attribute description"),
        H5Aclose);
    check(H5Awrite(a.id(), st.id(), description.c_str()), "write attribute description");
  }
}

void RowDataset::append(const void* data, int64_t rows) {
  if (rows <= 0) return;
  const int rank = cols_ > 0 ? 2 : 1;
  hsize_t newdims[2] = {static_cast<hsize_t>(rows_ + rows), static_cast<hsize_t>(cols_)};
  check(H5Dset_extent(ds_.id(), newdims), "extend " + path_);
  Handle fsp(check_id(H5Dget_space(ds_.id()), "H5Dget_space"), H5Sclose);
  hsize_t start[2] = {static_cast<hsize_t>(rows_), 0};
  hsize_t count[2] = {static_cast<hsize_t>(rows), static_cast<hsize_t>(cols_)};
  check(H5Sselect_hyperslab(fsp.id(), H5S_SELECT_SET, start, nullptr, count, nullptr),
        "select " + path_);
  Handle msp(check_id(H5Screate_simple(rank, count, nullptr), "H5Screate_simple"), H5Sclose);
  check(H5Dwrite(ds_.id(), mem_type(kind_), msp.id(), fsp.id(), H5P_DEFAULT, data),
        "write " + path_);
  rows_ += rows;
}

RowDataset RowDataset::open(hid_t loc, const std::string& path, Kind kind) {
  RowDataset r;
  r.kind_ = kind;
  r.path_ = path;
  r.ds_ = Handle(check_id(H5Dopen2(loc, path.c_str(), H5P_DEFAULT), "open dataset " + path),
                 H5Dclose);
  Handle sp(check_id(H5Dget_space(r.ds_.id()), "H5Dget_space"), H5Sclose);
  hsize_t dims[2] = {0, 0};
  const int rank = H5Sget_simple_extent_dims(sp.id(), dims, nullptr);
  BUPO_CHECK(rank == 1 || rank == 2, "HDF5: dataset ", path, " has rank ", rank,
             "; expected 1 or 2");
  r.rows_ = static_cast<int64_t>(dims[0]);
  r.cols_ = rank == 2 ? static_cast<int64_t>(dims[1]) : 0;
  return r;
}

void RowDataset::truncate(int64_t rows) {
  if (rows >= rows_) return;
  hsize_t newdims[2] = {static_cast<hsize_t>(std::max<int64_t>(0, rows)),
                        static_cast<hsize_t>(cols_)};
  check(H5Dset_extent(ds_.id(), newdims), "truncate " + path_);
  rows_ = std::max<int64_t>(0, rows);
}

File File::create(const std::string& path, bool overwrite) {
  BUPO_CHECK(overwrite || !std::filesystem::exists(path), path,
             ": output file exists; refusing to overwrite it (pass --overwrite)");
  File f;
  f.path_ = path;
  f.file_ = Handle(H5Fcreate(path.c_str(), H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT), H5Fclose);
  BUPO_CHECK(f.file_.id() >= 0, path, ": cannot create HDF5 file");
  return f;
}
File File::open_read(const std::string& path) {
  File f;
  f.path_ = path;
  f.file_ = Handle(H5Fopen(path.c_str(), H5F_ACC_RDONLY, H5P_DEFAULT), H5Fclose);
  BUPO_CHECK(f.file_.id() >= 0, path, ": cannot open as HDF5");
  return f;
}
File File::open_rw(const std::string& path) {
  File f;
  f.path_ = path;
  f.file_ = Handle(H5Fopen(path.c_str(), H5F_ACC_RDWR, H5P_DEFAULT), H5Fclose);
  BUPO_CHECK(f.file_.id() >= 0, path, ": cannot open as HDF5 for appending");
  return f;
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
void File::flush() {
  check(H5Fflush(file_.id(), H5F_SCOPE_GLOBAL), "flush " + path_);
}

std::vector<int64_t> dataset_shape(hid_t file, const std::string& path) {
  Handle ds(check_id(H5Dopen2(file, path.c_str(), H5P_DEFAULT), "open " + path), H5Dclose);
  Handle sp(check_id(H5Dget_space(ds.id()), "H5Dget_space"), H5Sclose);
  hsize_t dims[8];
  const int rank = H5Sget_simple_extent_dims(sp.id(), dims, nullptr);
  return std::vector<int64_t>(dims, dims + rank);
}
namespace {
template <typename T>
std::vector<T> read_all(hid_t file, const std::string& path, hid_t mtype) {
  int64_t n = 1;
  for (int64_t d : dataset_shape(file, path)) n *= d;
  std::vector<T> out(static_cast<size_t>(n));
  Handle ds(check_id(H5Dopen2(file, path.c_str(), H5P_DEFAULT), "open " + path), H5Dclose);
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

}  // namespace bupo::h5
