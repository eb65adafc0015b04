// SHA-256 of a file, to check the bundle's files against its manifest before loading them.
#ifndef MLPC_BUNDLE_SHA256_H_
#define MLPC_BUNDLE_SHA256_H_

#include <string>

namespace mlpc {

// Lowercase hex SHA-256 (FIPS 180-4) of the file at `path`; throws std::runtime_error if unreadable.
std::string Sha256File(const std::string& path);

}  // namespace mlpc

#endif  // MLPC_BUNDLE_SHA256_H_
