// mlpc's TVM RPC server for boards: the device side of TVM's RPC protocol (the TVM wheels ship
// only the Python server, which needs Python and the TVM package on the board). It registers
// with a tracker, accepts one session at a time, and serves it with the TVM runtime's own RPC
// endpoint (`rpc.ServerLoop`): uploads land in --workdir, `load_module` loads them there.
//
//   mlpc-rpc-server --tracker HOST:PORT --key KEY [--host 0.0.0.0] [--port 9090] [--workdir DIR]
//   mlpc-rpc-server --port 9090 --key KEY            (no tracker: clients connect directly)
//
// Each session runs in a forked child with its own directory under --workdir (clients remove
// their files and the directory when done), so a crashing kernel ends the session, not the
// server. `tvm.contrib.random.random_fill_for_measure` (MetaSchedule's RPCRunner fills its
// arguments with it) is registered here: the wheel's runtime is built without USE_RANDOM.
// Protocol (python/tvm/rpc/server.py, base.py): a session opens with RPC_MAGIC, the key length
// and "client:<match key>"; the server answers RPC_CODE_SUCCESS and "server:<key>". With a
// tracker, the server sends RPC_TRACKER_MAGIC, then length-prefixed JSON: [UPDATE_INFO, {"key":
// "server:KEY", "addr": [null, PORT]}], and [PUT, KEY, [PORT, MATCHKEY], null] before each session.
#include <arpa/inet.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <dlpack/dlpack.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <iostream>
#include <random>
#include <stdexcept>
#include <string>

namespace ffi = tvm::ffi;

namespace {

constexpr int32_t kRpcMagic = 0xff271;
constexpr int32_t kTrackerMagic = 0x2f271;
constexpr int32_t kCodeSuccess = kRpcMagic + 0;
constexpr int32_t kCodeMismatch = kRpcMagic + 2;
constexpr int kTrackerSuccess = 0, kTrackerPut = 3, kTrackerUpdateInfo = 5;

[[noreturn]] void Die(const std::string& message) {
  std::cerr << "error: " << message << std::endl;
  std::exit(2);
}

void Log(const std::string& message) { std::cerr << "mlpc-rpc-server: " << message << std::endl; }

bool SendAll(int fd, const void* data, size_t size) {
  const char* p = static_cast<const char*>(data);
  while (size > 0) {
    ssize_t n = send(fd, p, size, MSG_NOSIGNAL);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return false;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool RecvAll(int fd, void* data, size_t size) {
  char* p = static_cast<char*>(data);
  while (size > 0) {
    ssize_t n = recv(fd, p, size, 0);
    if (n <= 0) {
      if (n < 0 && errno == EINTR) continue;
      return false;
    }
    p += n;
    size -= static_cast<size_t>(n);
  }
  return true;
}

bool SendInt(int fd, int32_t v) { return SendAll(fd, &v, 4); }  // little endian on every target

bool SendString(int fd, const std::string& s) {
  return SendInt(fd, static_cast<int32_t>(s.size())) && SendAll(fd, s.data(), s.size());
}

bool RecvString(int fd, std::string* s) {
  int32_t len = 0;
  if (!RecvAll(fd, &len, 4) || len < 0 || len > (1 << 20)) return false;
  s->assign(static_cast<size_t>(len), '\0');
  return RecvAll(fd, s->data(), s->size());
}

std::string RandomKey(const std::string& prefix) {
  std::random_device rd;
  std::mt19937 gen(rd());
  return prefix + ":" + std::to_string(std::uniform_real_distribution<double>(0.0, 1.0)(gen));
}

int Connect(const std::string& host, const std::string& port) {
  addrinfo hints{}, *found = nullptr;
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  if (getaddrinfo(host.c_str(), port.c_str(), &hints, &found) != 0) return -1;
  int fd = -1;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    fd = socket(a->ai_family, a->ai_socktype, a->ai_protocol);
    if (fd >= 0 && connect(fd, a->ai_addr, a->ai_addrlen) == 0) break;
    if (fd >= 0) close(fd);
    fd = -1;
  }
  freeaddrinfo(found);
  return fd;
}

// A JSON reply of the tracker: the bare integer code.
bool TrackerCall(int fd, const std::string& request) {
  std::string reply;
  if (!SendString(fd, request) || !RecvString(fd, &reply)) return false;
  return std::atoi(reply.c_str()) == kTrackerSuccess;
}

int ConnectTracker(const std::string& tracker, const std::string& key, int port) {
  size_t colon = tracker.rfind(':');
  if (colon == std::string::npos) Die("--tracker " + tracker + ": give HOST:PORT");
  for (int attempt = 0; attempt < 60; ++attempt) {
    int fd = Connect(tracker.substr(0, colon), tracker.substr(colon + 1));
    if (fd >= 0) {
      int32_t magic = 0;
      if (SendInt(fd, kTrackerMagic) && RecvAll(fd, &magic, 4) && magic == kTrackerMagic &&
          TrackerCall(fd, "[" + std::to_string(kTrackerUpdateInfo) + ", {\"key\": \"server:" + key +
                              "\", \"addr\": [null, " + std::to_string(port) + "]}]")) {
        return fd;
      }
      close(fd);
    }
    sleep(1);
  }
  Die("cannot register with the RPC tracker at " + tracker);
}

int Listen(const std::string& host, int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  int one = 1;
  setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_port = htons(static_cast<uint16_t>(port));
  if (inet_pton(AF_INET, host.c_str(), &addr.sin_addr) != 1) Die("--host " + host + ": not an IPv4 address");
  if (bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0 || listen(fd, 4) != 0) {
    Die("cannot listen on " + host + ":" + std::to_string(port) + " (" + std::strerror(errno) + ")");
  }
  return fd;
}

// The opening handshake of a session: true when the client asked for `match_key`.
bool Handshake(int conn, const std::string& match_key, const std::string& key) {
  int32_t magic = 0;
  std::string client_key;
  if (!RecvAll(conn, &magic, 4) || magic != kRpcMagic || !RecvString(conn, &client_key)) return false;
  std::string header = client_key.substr(0, client_key.find(' '));
  if (header != "client:" + match_key) {
    SendInt(conn, kCodeMismatch);
    Log("key mismatch: " + header);
    return false;
  }
  return SendInt(conn, kCodeSuccess) && SendString(conn, "server:" + key);
}

// Random operands for timing candidates: uniform [-1, 1) for floats, small integers for integers
// (any value works for timing; these avoid NaNs and overflow-heavy paths).
void RandomFill(DLTensor* t) {
  if (t->device.device_type != kDLCPU) throw std::runtime_error("random_fill_for_measure: CPU tensors only");
  int64_t n = 1;
  for (int i = 0; i < t->ndim; ++i) n *= t->shape[i];
  static std::mt19937 gen(12345);
  char* base = static_cast<char*>(t->data) + t->byte_offset;
  const int bytes = (t->dtype.bits * t->dtype.lanes + 7) / 8;
  std::uniform_real_distribution<float> real(-1.0f, 1.0f);
  std::uniform_int_distribution<int> small(-8, 7);
  for (int64_t i = 0; i < n; ++i) {
    char* p = base + i * bytes;
    if (t->dtype.code == kDLFloat && t->dtype.bits == 32) {
      float v = real(gen);
      std::memcpy(p, &v, 4);
    } else if (t->dtype.code == kDLFloat && t->dtype.bits == 64) {
      double v = real(gen);
      std::memcpy(p, &v, 8);
    } else if (t->dtype.code == kDLInt || t->dtype.code == kDLUInt) {
      int64_t v = t->dtype.code == kDLUInt ? small(gen) + 8 : small(gen);
      std::memcpy(p, &v, static_cast<size_t>(bytes));  // little endian: the low bytes
    } else {
      std::memset(p, 0, static_cast<size_t>(bytes));  // float16/bfloat16/bool: zeros time the same
    }
  }
}

void RegisterServerEnv(const std::string& workdir) {
  ffi::Function::SetGlobal("tvm.rpc.server.workpath", ffi::Function::FromTyped([workdir](std::string name) {
    return workdir + "/" + name;
  }));
  ffi::Function::SetGlobal("tvm.rpc.server.load_module", ffi::Function::FromTyped([workdir](std::string name) {
    Log("load_module " + name);
    return ffi::Module::LoadFromFile(workdir + "/" + name);
  }));
  ffi::Function::SetGlobal("tvm.contrib.random.random_fill_for_measure",
                           ffi::Function::FromPacked([](ffi::PackedArgs args, ffi::Any*) {
                             RandomFill(args[0].cast<DLTensor*>());
                           }),
                           true);
}

void Serve(int conn, const std::string& workdir) {
  pid_t child = fork();
  if (child == 0) {
    std::string pattern = workdir + "/session-XXXXXX";
    if (mkdtemp(pattern.data()) == nullptr) Die("cannot create a session directory in " + workdir);
    RegisterServerEnv(pattern);
    int one = 1;
    setsockopt(conn, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    static const auto loop = ffi::Function::GetGlobalRequired("rpc.ServerLoop");
    loop(conn);
    std::_Exit(0);
  }
  close(conn);
  int status = 0;
  if (child > 0) waitpid(child, &status, 0);
  Log("session ended (status " + std::to_string(status) + ")");
}

}  // namespace

int main(int argc, char** argv) {
  // Unpinned workers, as in mlpc/__init__.py (pinned ones wait whenever the OS puts the
  // calling thread on their core); the user's own TVM_BIND_THREADS wins.
  setenv("TVM_BIND_THREADS", "0", 0);
  std::string host = "0.0.0.0", tracker, key, workdir;
  int port = 9090;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) Die(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--host") host = value();
    else if (arg == "--port") port = std::atoi(value().c_str());
    else if (arg == "--tracker") tracker = value();
    else if (arg == "--key") key = value();
    else if (arg == "--workdir") workdir = value();
    else Die("unknown argument " + arg + " (see the comment at the top of rpc_server.cc)");
  }
  if (key.empty()) Die("give a device key with --key");
  if (workdir.empty()) {
    char pattern[] = "/tmp/mlpc-rpc-XXXXXX";
    if (mkdtemp(pattern) == nullptr) Die("cannot create a work directory");
    workdir = pattern;
  }
  mkdir(workdir.c_str(), 0700);
  int listener = Listen(host, port);
  Log("listening on " + host + ":" + std::to_string(port) + ", key " + key + ", workdir " + workdir);
  int tracker_fd = tracker.empty() ? -1 : ConnectTracker(tracker, key, port);
  for (;;) {
    std::string match_key = key;
    if (tracker_fd >= 0) {
      match_key = RandomKey(key);
      if (!TrackerCall(tracker_fd, "[" + std::to_string(kTrackerPut) + ", \"" + key + "\", [" +
                                       std::to_string(port) + ", \"" + match_key + "\"], null]")) {
        close(tracker_fd);
        tracker_fd = ConnectTracker(tracker, key, port);
        continue;
      }
    }
    int conn = accept(listener, nullptr, nullptr);
    if (conn < 0) continue;
    if (Handshake(conn, match_key, key)) {
      Serve(conn, workdir);
    } else {
      close(conn);
    }
  }
}
