// Reading and writing NumPy .npz files (what np.savez writes: a ZIP archive of stored .npy
// entries) without zlib: stored entries only; compressed ones are refused with a clear message.
#ifndef MLPC_BUNDLE_NPZ_H_
#define MLPC_BUNDLE_NPZ_H_

#include <cstdint>
#include <stdexcept>
#include <string>
#include <vector>

namespace mlpc {

// A malformed or unsupported input file (the runner exits with status 2).
struct InputError : std::runtime_error {
  using std::runtime_error::runtime_error;
};

// One array: its NumPy dtype name ("float32", "int8", ...), shape and raw little-endian C-order bytes.
struct Array {
  std::string name;
  std::string dtype;
  std::vector<int64_t> shape;
  std::vector<uint8_t> data;
};

// Bytes per element of a NumPy dtype name; throws InputError for dtypes the runner does not know.
size_t ItemSize(const std::string& dtype);

// Read every array of an .npz written by np.savez, in archive order.
std::vector<Array> ReadNpz(const std::string& path);

// Write arrays as an uncompressed .npz (keys are the array names) that np.load reads.
void WriteNpz(const std::string& path, const std::vector<Array>& arrays);

// CRC-32 (the ZIP/zlib polynomial) of a byte range.
uint32_t Crc32(const uint8_t* data, size_t size);

}  // namespace mlpc

#endif  // MLPC_BUNDLE_NPZ_H_
