// .npz reading and writing: a ZIP reader that follows the central directory (with ZIP64
// extra fields, which np.savez writes), and the .npy v1-v3 header format.
#include "npz.h"

#include <array>
#include <cstring>
#include <fstream>
#include <iterator>
#include <sstream>

namespace mlpc {
namespace {

struct DType {
  const char* name;
  char kind;  // the .npy descr kind: f, i, u, b
  size_t size;
};

constexpr DType kDTypes[] = {
    {"float16", 'f', 2}, {"float32", 'f', 4}, {"float64", 'f', 8}, {"int8", 'i', 1},
    {"int16", 'i', 2},   {"int32", 'i', 4},   {"int64", 'i', 8},   {"uint8", 'u', 1},
    {"uint16", 'u', 2},  {"uint32", 'u', 4},  {"uint64", 'u', 8},  {"bool", 'b', 1},
};

const DType* FindByName(const std::string& name) {
  for (const DType& d : kDTypes) {
    if (name == d.name) return &d;
  }
  return nullptr;
}

uint64_t Le(const std::vector<uint8_t>& buf, uint64_t pos, int bytes, const std::string& what) {
  if (pos > buf.size() || static_cast<uint64_t>(bytes) > buf.size() - pos) {
    throw InputError(what + ": truncated ZIP structure");
  }
  uint64_t v = 0;
  for (int i = bytes - 1; i >= 0; --i) v = (v << 8) | buf[pos + i];
  return v;
}

void PutLe(std::vector<uint8_t>* out, uint64_t v, int bytes) {
  for (int i = 0; i < bytes; ++i) out->push_back(static_cast<uint8_t>(v >> (8 * i)));
}

// Value of `key` in a .npy header dict, e.g. "'descr': '<f4'" -> "'<f4'"; up to the next
// top-level comma or the closing brace.
std::string HeaderField(const std::string& header, const std::string& key, const std::string& what) {
  size_t at = header.find("'" + key + "'");
  if (at == std::string::npos) throw InputError(what + ": .npy header has no '" + key + "'");
  at = header.find(':', at);
  if (at == std::string::npos) throw InputError(what + ": malformed .npy header");
  size_t start = header.find_first_not_of(' ', at + 1);
  if (start == std::string::npos) throw InputError(what + ": malformed .npy header");
  size_t end = header[start] == '(' ? header.find(')', start) + 1 : header.find_first_of(",}", start);
  if (end == std::string::npos || end == 0) throw InputError(what + ": malformed .npy header");
  return header.substr(start, end - start);
}

Array ParseNpy(const uint8_t* p, size_t size, const std::string& what) {
  static const char kMagic[] = "\x93NUMPY";
  if (size < 10 || std::memcmp(p, kMagic, 6) != 0) throw InputError(what + ": not a .npy array");
  int major = p[6];
  size_t header_len, offset;
  if (major == 1) {
    header_len = p[8] | (p[9] << 8);
    offset = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) throw InputError(what + ": truncated .npy header");
    header_len = p[8] | (p[9] << 8) | (p[10] << 16) | (static_cast<size_t>(p[11]) << 24);
    offset = 12;
  } else {
    throw InputError(what + ": unsupported .npy format version " + std::to_string(major));
  }
  if (offset + header_len > size) throw InputError(what + ": truncated .npy header");
  std::string header(reinterpret_cast<const char*>(p + offset), header_len);
  Array array;
  std::string descr = HeaderField(header, "descr", what);
  if (descr.size() < 5 || descr.front() != '\'' || descr.back() != '\'') {
    throw InputError(what + ": unsupported dtype " + descr + " (structured arrays are not supported)");
  }
  descr = descr.substr(1, descr.size() - 2);
  if (descr[0] == '>') throw InputError(what + ": big-endian data (" + descr + "); save little-endian arrays");
  const DType* dtype = nullptr;
  for (const DType& d : kDTypes) {
    if (descr.substr(1) == std::string(1, d.kind) + std::to_string(d.size)) dtype = &d;
  }
  if (dtype == nullptr || (descr[0] != '<' && descr[0] != '|' && descr[0] != '=')) {
    throw InputError(what + ": unsupported dtype '" + descr + "'");
  }
  array.dtype = dtype->name;
  if (HeaderField(header, "fortran_order", what) != "False") {
    throw InputError(what + ": Fortran-ordered array; save a C-contiguous array (np.ascontiguousarray)");
  }
  std::string shape = HeaderField(header, "shape", what);
  std::stringstream dims(shape.substr(1, shape.size() - 2));
  std::string dim;
  size_t count = 1;
  while (std::getline(dims, dim, ',')) {
    if (dim.find_first_not_of(' ') == std::string::npos) continue;
    try {
      array.shape.push_back(std::stoll(dim));
    } catch (const std::exception&) {
      throw InputError(what + ": malformed shape " + shape + " in the .npy header");
    }
    if (array.shape.back() < 0) throw InputError(what + ": negative dimension in shape " + shape);
    count *= static_cast<size_t>(array.shape.back());
  }
  size_t bytes = count * dtype->size;
  if (size - offset - header_len != bytes) {
    throw InputError(what + ": holds " + std::to_string(size - offset - header_len) + " data bytes, shape " +
                     shape + " of " + dtype->name + " needs " + std::to_string(bytes));
  }
  array.data.assign(p + offset + header_len, p + size);
  return array;
}

std::vector<uint8_t> NpyBytes(const Array& array) {
  const DType* dtype = FindByName(array.dtype);
  if (dtype == nullptr) throw std::runtime_error("cannot write dtype " + array.dtype);
  std::string shape = "(";
  for (int64_t d : array.shape) shape += std::to_string(d) + ", ";
  if (array.shape.size() == 1) shape.pop_back();
  else if (!array.shape.empty()) shape.resize(shape.size() - 2);
  shape += ")";
  std::string descr = std::string(dtype->size == 1 ? "|" : "<") + dtype->kind + std::to_string(dtype->size);
  std::string header = "{'descr': '" + descr + "', 'fortran_order': False, 'shape': " + shape + ", }";
  size_t total = 10 + header.size() + 1;
  header.append((64 - total % 64) % 64, ' ');
  header += '\n';
  std::vector<uint8_t> out = {0x93, 'N', 'U', 'M', 'P', 'Y', 1, 0};
  PutLe(&out, header.size(), 2);
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), array.data.begin(), array.data.end());
  return out;
}

}  // namespace

size_t ItemSize(const std::string& dtype) {
  const DType* d = FindByName(dtype);
  if (d == nullptr) throw InputError("unsupported dtype " + dtype);
  return d->size;
}

uint32_t Crc32(const uint8_t* data, size_t size) {
  static const std::array<uint32_t, 256> table = [] {
    std::array<uint32_t, 256> t{};
    for (uint32_t i = 0; i < 256; ++i) {
      uint32_t c = i;
      for (int k = 0; k < 8; ++k) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
      t[i] = c;
    }
    return t;
  }();
  uint32_t crc = 0xFFFFFFFFu;
  for (size_t i = 0; i < size; ++i) crc = table[(crc ^ data[i]) & 0xFF] ^ (crc >> 8);
  return crc ^ 0xFFFFFFFFu;
}

std::vector<Array> ReadNpz(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw InputError(path + ": cannot open");
  std::vector<uint8_t> buf((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string what = path;
  // The end-of-central-directory record: the last 22+ bytes (a comment may follow it).
  size_t eocd = std::string::npos;
  if (buf.size() >= 22) {
    size_t lowest = buf.size() > 22 + 0xFFFF ? buf.size() - 22 - 0xFFFF : 0;
    for (size_t i = buf.size() - 21; i-- > lowest;) {
      if (Le(buf, i, 4, what) == 0x06054b50) {
        eocd = i;
        break;
      }
    }
  }
  if (eocd == std::string::npos) {
    throw InputError(path + ": not an .npz file (no ZIP directory found; write it with np.savez)");
  }
  uint64_t entries = Le(buf, eocd + 10, 2, what);
  uint64_t cd_offset = Le(buf, eocd + 16, 4, what);  // checked by the reads below
  if ((entries == 0xFFFF || cd_offset == 0xFFFFFFFF) && eocd >= 20 && Le(buf, eocd - 20, 4, what) == 0x07064b50) {
    uint64_t z64 = Le(buf, eocd - 12, 8, what);
    if (Le(buf, z64, 4, what) != 0x06064b50) throw InputError(path + ": corrupt ZIP64 directory");
    entries = Le(buf, z64 + 32, 8, what);
    cd_offset = Le(buf, z64 + 48, 8, what);
  }
  std::vector<Array> arrays;
  uint64_t pos = cd_offset;
  for (uint64_t n = 0; n < entries; ++n) {
    if (Le(buf, pos, 4, what) != 0x02014b50) throw InputError(path + ": corrupt ZIP central directory");
    uint64_t flags = Le(buf, pos + 8, 2, what), method = Le(buf, pos + 10, 2, what);
    uint32_t crc = static_cast<uint32_t>(Le(buf, pos + 16, 4, what));
    uint64_t csize = Le(buf, pos + 20, 4, what), usize = Le(buf, pos + 24, 4, what);
    size_t name_len = Le(buf, pos + 28, 2, what), extra_len = Le(buf, pos + 30, 2, what);
    size_t comment_len = Le(buf, pos + 32, 2, what);
    uint64_t local = Le(buf, pos + 42, 4, what);
    if (pos + 46 + name_len > buf.size()) throw InputError(path + ": corrupt ZIP central directory");
    std::string name(reinterpret_cast<const char*>(&buf[pos + 46]), name_len);
    // ZIP64: the fields saturated at 0xFFFFFFFF follow in the 0x0001 extra block, in this order.
    for (uint64_t e = pos + 46 + name_len; e + 4 <= pos + 46 + name_len + extra_len;) {
      uint64_t id = Le(buf, e, 2, what), len = Le(buf, e + 2, 2, what), at = e + 4;
      if (id == 0x0001) {
        if (usize == 0xFFFFFFFF) usize = Le(buf, at, 8, what), at += 8;
        if (csize == 0xFFFFFFFF) csize = Le(buf, at, 8, what), at += 8;
        if (local == 0xFFFFFFFF) local = Le(buf, at, 8, what);
      }
      e += 4 + len;
    }
    pos += 46 + name_len + extra_len + comment_len;
    const std::string entry = path + ": entry '" + name + "'";
    if (flags & 1) throw InputError(entry + " is encrypted");
    if (method != 0) {
      throw InputError(entry + " is compressed (ZIP method " + std::to_string(method) +
                       "); the runner reads np.savez files: save the inputs with np.savez, not np.savez_compressed");
    }
    if (Le(buf, local, 4, what) != 0x04034b50) throw InputError(entry + ": corrupt local header");
    uint64_t data = local + 30 + Le(buf, local + 26, 2, what) + Le(buf, local + 28, 2, what);
    if (csize != usize || data > buf.size() || csize > buf.size() - data) throw InputError(entry + ": truncated data");
    if (Crc32(&buf[data], csize) != crc) throw InputError(entry + ": CRC mismatch, the file is corrupt");
    if (name.size() < 5 || name.compare(name.size() - 4, 4, ".npy") != 0) {
      throw InputError(entry + " is not a .npy array");
    }
    Array array = ParseNpy(&buf[data], csize, entry);
    array.name = name.substr(0, name.size() - 4);
    arrays.push_back(std::move(array));
  }
  return arrays;
}

void WriteNpz(const std::string& path, const std::vector<Array>& arrays) {
  std::vector<uint8_t> out, directory;
  for (const Array& array : arrays) {
    std::vector<uint8_t> npy = NpyBytes(array);
    std::string name = array.name + ".npy";
    if (npy.size() >= 0xFFFFFFFFu || out.size() >= 0xFFFFFFFFu) {
      throw std::runtime_error("output " + array.name + " is too large for a ZIP without ZIP64");
    }
    uint32_t crc = Crc32(npy.data(), npy.size());
    uint64_t offset = out.size();
    // Local header: version 2.0, no flags, stored, DOS date 1980-01-01.
    PutLe(&out, 0x04034b50, 4), PutLe(&out, 20, 2), PutLe(&out, 0, 2), PutLe(&out, 0, 2);
    PutLe(&out, 0, 2), PutLe(&out, 0x21, 2), PutLe(&out, crc, 4), PutLe(&out, npy.size(), 4);
    PutLe(&out, npy.size(), 4), PutLe(&out, name.size(), 2), PutLe(&out, 0, 2);
    out.insert(out.end(), name.begin(), name.end());
    out.insert(out.end(), npy.begin(), npy.end());
    PutLe(&directory, 0x02014b50, 4), PutLe(&directory, 20, 2), PutLe(&directory, 20, 2);
    PutLe(&directory, 0, 2), PutLe(&directory, 0, 2), PutLe(&directory, 0, 2), PutLe(&directory, 0x21, 2);
    PutLe(&directory, crc, 4), PutLe(&directory, npy.size(), 4), PutLe(&directory, npy.size(), 4);
    PutLe(&directory, name.size(), 2), PutLe(&directory, 0, 2), PutLe(&directory, 0, 2);
    PutLe(&directory, 0, 2), PutLe(&directory, 0, 2), PutLe(&directory, 0, 4), PutLe(&directory, offset, 4);
    directory.insert(directory.end(), name.begin(), name.end());
  }
  uint64_t cd_offset = out.size();
  out.insert(out.end(), directory.begin(), directory.end());
  PutLe(&out, 0x06054b50, 4), PutLe(&out, 0, 2), PutLe(&out, 0, 2);
  PutLe(&out, arrays.size(), 2), PutLe(&out, arrays.size(), 2);
  PutLe(&out, directory.size(), 4), PutLe(&out, cd_offset, 4), PutLe(&out, 0, 2);
  std::ofstream file(path, std::ios::binary);
  file.write(reinterpret_cast<const char*>(out.data()), static_cast<std::streamsize>(out.size()));
  if (!file) throw std::runtime_error(path + ": cannot write");
}

}  // namespace mlpc
