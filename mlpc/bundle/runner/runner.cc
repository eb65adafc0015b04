// mlpc's native bundle runner: checks a bundle against its manifest, loads model.so with the TVM
// runtime's Relax VM and runs "main" on the arrays of an .npz, writing the outputs to an .npz.
//
//   run --inputs in.npz -o out.npz [--bundle DIR]     (DIR defaults to this binary's ../)
//   run --check [--bundle DIR]                        (verify checksums and architecture only)
//
// Exit status: 0 done, 2 bad bundle or bad input (one line on stderr), 3 the runtime failed.
// Built against the tvm-ffi headers only; links libtvm_runtime.so (the VM) and libtvm_ffi.so.
#include <dlpack/dlpack.h>
#include <tvm/ffi/container/array.h>
#include <tvm/ffi/container/tensor.h>
#include <tvm/ffi/dtype.h>
#include <tvm/ffi/extra/json.h>
#include <tvm/ffi/extra/module.h>
#include <tvm/ffi/function.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "npz.h"
#include "sha256.h"

namespace ffi = tvm::ffi;
namespace json = tvm::ffi::json;

namespace mlpc {
namespace {

#if defined(__aarch64__)
constexpr const char* kArch = "aarch64";
constexpr int kElfMachine = 183;
#elif defined(__arm__)
constexpr const char* kArch = "armv7l";
constexpr int kElfMachine = 40;
#elif defined(__x86_64__)
constexpr const char* kArch = "x86_64";
constexpr int kElfMachine = 62;
#else
#error "unsupported architecture"
#endif

constexpr int kPooledAllocator = 2;  // tvm.runtime.vm.VirtualMachine.POOLED_ALLOCATOR

std::string Str(const ffi::Any& v, const std::string& what) {
  auto s = v.as<ffi::String>();
  if (!s) throw InputError("manifest.json: " + what + " is not a string");
  return std::string(*s);
}

ffi::Any Field(const ffi::Any& obj, const std::string& key, const std::string& what) {
  auto map = obj.as<json::Object>();
  if (!map) throw InputError("manifest.json: " + what + " is not an object");
  auto it = map->find(ffi::String(key));
  if (it == map->end()) throw InputError("manifest.json: " + what + " has no \"" + key + "\"");
  return (*it).second;
}

json::Array List(const ffi::Any& v, const std::string& what) {
  auto a = v.as<json::Array>();
  if (!a) throw InputError("manifest.json: " + what + " is not a list");
  return *a;
}

struct Spec {
  std::string name, dtype;
  std::vector<int64_t> shape;
};

std::vector<Spec> Specs(const ffi::Any& manifest, const char* key) {
  std::vector<Spec> specs;
  for (const ffi::Any& item : List(Field(manifest, key, "the manifest"), key)) {
    Spec spec{Str(Field(item, "name", key), key), Str(Field(item, "dtype", key), key), {}};
    for (const ffi::Any& d : List(Field(item, "shape", key), key)) spec.shape.push_back(d.cast<int64_t>());
    specs.push_back(spec);
  }
  return specs;
}

std::string ShapeText(const std::vector<int64_t>& shape) {
  std::string s = "(";
  for (size_t i = 0; i < shape.size(); ++i) s += (i ? ", " : "") + std::to_string(shape[i]);
  return s + (shape.size() == 1 ? ",)" : ")");
}

int ElfMachine(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char h[20] = {0};
  if (!in.read(reinterpret_cast<char*>(h), sizeof(h)) || std::memcmp(h, "\x7f" "ELF", 4) != 0) return -1;
  return h[5] == 1 ? h[18] | (h[19] << 8) : (h[18] << 8) | h[19];
}

// Parse manifest.json and check that every file it lists is intact and built for this machine.
ffi::Any CheckBundle(const std::string& dir) {
  std::ifstream in(dir + "/manifest.json");
  if (!in) throw InputError(dir + ": no manifest.json; not an mlpc bundle");
  std::stringstream text;
  text << in.rdbuf();
  ffi::String error;
  ffi::Any manifest = json::Parse(text.str(), &error);
  if (!error.empty()) throw InputError(dir + "/manifest.json: not valid JSON (" + std::string(error) + ")");
  if (Str(Field(manifest, "format", "the manifest"), "format") != "mlpc-artifact") {
    throw InputError(dir + "/manifest.json is not an mlpc manifest");
  }
  std::string arch = Str(Field(Field(manifest, "target", "the manifest"), "arch", "target"), "target.arch");
  if (arch != kArch) {
    throw InputError(dir + ": the bundle is built for " + arch + " but this runner runs on " + kArch +
                     "; use a bundle compiled for this board's --target");
  }
  auto files = Field(manifest, "files", "the manifest").as<json::Object>();
  if (!files) throw InputError("manifest.json: \"files\" is not an object");
  for (const auto& kv : *files) {
    std::string name = Str(kv.first, "a file name"), digest = Str(kv.second, "a checksum");
    std::string path = dir + "/" + name;
    if (access(path.c_str(), R_OK) != 0) throw InputError(dir + ": file '" + name + "' listed in the manifest is missing");
    if (Sha256File(path) != digest) {
      throw InputError(dir + ": checksum of '" + name + "' does not match the manifest; the bundle is damaged or was modified");
    }
  }
  std::string library = dir + "/" + Str(Field(Field(manifest, "backend", "the manifest"), "library", "backend"), "library");
  int machine = ElfMachine(library);
  if (machine != kElfMachine) {
    throw InputError(library + ": not a shared library for " + kArch + " (ELF machine " + std::to_string(machine) +
                     "); the bundle is inconsistent, rebuild it with `mlpc compile --bundle`");
  }
  return manifest;
}

struct CpuAlloc {
  void AllocData(DLTensor* t) {
    size_t bytes = (ffi::GetDataSize(*t) + 63) / 64 * 64;
    t->data = std::aligned_alloc(64, bytes ? bytes : 64);
    if (t->data == nullptr) throw std::bad_alloc();
  }
  void FreeData(DLTensor* t) { std::free(t->data); }
};

std::vector<ffi::Tensor> MatchInputs(const std::vector<Array>& arrays, const std::vector<Spec>& specs,
                                     const std::string& path) {
  std::string names;
  for (const Spec& s : specs) names += (names.empty() ? "" : ", ") + s.name;
  for (const Array& a : arrays) {
    bool known = false;
    for (const Spec& s : specs) known |= s.name == a.name;
    if (!known) throw InputError(path + ": unknown input '" + a.name + "'; the model takes " + names);
  }
  std::vector<ffi::Tensor> tensors;
  for (const Spec& spec : specs) {
    const Array* found = nullptr;
    for (const Array& a : arrays) found = a.name == spec.name ? &a : found;
    if (found == nullptr) throw InputError(path + ": missing input '" + spec.name + "'; the model takes " + names);
    if (found->dtype != spec.dtype) {
      throw InputError(path + ": input '" + spec.name + "' is " + found->dtype + ", the model expects " +
                       spec.dtype + " (convert it with .astype before np.savez)");
    }
    if (found->shape != spec.shape) {
      throw InputError(path + ": input '" + spec.name + "' has shape " + ShapeText(found->shape) +
                       ", the model expects " + ShapeText(spec.shape));
    }
    ffi::Tensor t = ffi::Tensor::FromNDAlloc(CpuAlloc(), ffi::ShapeView(spec.shape.data(), spec.shape.size()),
                                             ffi::StringToDLDataType(spec.dtype), DLDevice{kDLCPU, 0});
    std::memcpy(t.data_ptr(), found->data.data(), found->data.size());
    tensors.push_back(t);
  }
  return tensors;
}

void Flatten(const ffi::Any& value, std::vector<ffi::Tensor>* out) {
  if (auto t = value.as<ffi::Tensor>()) {
    out->push_back(*t);
  } else if (auto items = value.as<ffi::Array<ffi::Any>>()) {
    for (const ffi::Any& item : *items) Flatten(item, out);
  } else {
    throw std::runtime_error("the model returned a " + value.GetTypeKey() + ", not tensors");
  }
}

std::vector<Array> RunModel(const std::string& library, const std::vector<ffi::Tensor>& inputs,
                            const std::vector<Spec>& outputs) {
  ffi::Module lib = ffi::Module::LoadFromFile(library);
  auto load = lib->GetFunction("vm_load_executable");
  if (!load) throw InputError(library + ": not a Relax VM executable");
  ffi::Module vm = (*load)().cast<ffi::Module>();
  (*vm->GetFunction("vm_initialization"))(static_cast<int>(kDLCPU), 0, kPooledAllocator);
  auto main_fn = vm->GetFunction("main");
  if (!main_fn) throw InputError(library + ": has no \"main\" function");
  std::vector<ffi::AnyView> args(inputs.begin(), inputs.end());
  ffi::Any result;
  main_fn.value().CallPacked(args.data(), static_cast<int32_t>(args.size()), &result);
  std::vector<ffi::Tensor> tensors;
  Flatten(result, &tensors);
  if (tensors.size() != outputs.size()) {
    throw std::runtime_error("the model returned " + std::to_string(tensors.size()) + " tensors, the manifest lists " +
                             std::to_string(outputs.size()));
  }
  std::vector<Array> arrays;
  for (size_t i = 0; i < tensors.size(); ++i) {
    const ffi::Tensor& t = tensors[i];
    if (!t.IsContiguous() || t.device().device_type != kDLCPU) throw std::runtime_error("non-contiguous output");
    Array a{outputs[i].name, std::string(ffi::DLDataTypeToString(t.dtype())), {}, {}};
    for (int64_t d : t.shape()) a.shape.push_back(d);
    const uint8_t* data = static_cast<const uint8_t*>(t.data_ptr()) + t.byte_offset();
    a.data.assign(data, data + ffi::GetDataSize(*t.GetDLTensorPtr()));
    arrays.push_back(std::move(a));
  }
  return arrays;
}

std::string DefaultBundleDir() {
  char exe[4096];
  ssize_t n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
  if (n <= 0) return ".";
  std::string path(exe, static_cast<size_t>(n));
  path = path.substr(0, path.rfind('/'));  // .../bin
  return path.substr(0, path.rfind('/'));
}

int Main(int argc, char** argv) {
  std::string inputs, output, dir;
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw InputError(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--inputs" || arg == "-i") inputs = value();
    else if (arg == "--output" || arg == "-o") output = value();
    else if (arg == "--bundle") dir = value();
    else if (arg == "--check") check_only = true;
    else if (arg == "--help" || arg == "-h") {
      std::cout << "usage: run --inputs IN.npz -o OUT.npz [--bundle DIR] | run --check [--bundle DIR]\n";
      return 0;
    } else {
      throw InputError("unknown argument '" + arg + "' (see --help)");
    }
  }
  if (dir.empty()) dir = DefaultBundleDir();
  ffi::Any manifest = CheckBundle(dir);
  if (check_only) {
    std::cout << dir << ": bundle intact, built for " << kArch << "\n";
    return 0;
  }
  if (inputs.empty() || output.empty()) throw InputError("give --inputs IN.npz and -o OUT.npz (see --help)");
  std::vector<ffi::Tensor> tensors = MatchInputs(ReadNpz(inputs), Specs(manifest, "inputs"), inputs);
  std::string library = Str(Field(Field(manifest, "backend", "the manifest"), "library", "backend"), "library");
  std::vector<Array> results = RunModel(dir + "/" + library, tensors, Specs(manifest, "outputs"));
  std::string tmp = output + ".tmp";
  WriteNpz(tmp, results);
  if (std::rename(tmp.c_str(), output.c_str()) != 0) throw std::runtime_error(output + ": cannot write");
  std::cout << "wrote " << results.size() << " output(s) to " << output << "\n";
  return 0;
}

}  // namespace
}  // namespace mlpc

int main(int argc, char** argv) {
  // Unpinned workers, as in mlpc/__init__.py (pinned ones wait whenever the OS puts the
  // calling thread on their core); the user's own TVM_BIND_THREADS wins.
  setenv("TVM_BIND_THREADS", "0", 0);
  try {
    return mlpc::Main(argc, argv);
  } catch (const mlpc::InputError& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 2;
  } catch (const std::exception& e) {
    std::cerr << "error: the model failed to run: " << e.what() << "\n";
    return 3;
  }
}
