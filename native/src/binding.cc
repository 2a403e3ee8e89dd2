// Thin N-API glue over halo_api.h. Every entry point converts its JS arguments with checks,
// calls the C API, and turns any failure (a bad argument, a C status, or any C++ exception)
// into a JS Error with a `code` property. The surface declared here is mirrored, exactly, by
// src/kernels/native.ts; bump kAddonVersion whenever it changes.
#include <napi.h>

#include <cmath>
#include <exception>
#include <new>
#include <string>

#include "halo_api.h"
#include "kernels.h"

namespace {

constexpr int kAddonVersion = 2;
constexpr double kMaxSafeInteger = 9007199254740991.0;

Napi::Error CodedError(Napi::Env env, const char* code, const std::string& message) {
  Napi::Error error = Napi::Error::New(env, message);
  error.Set("code", Napi::String::New(env, code));
  return error;
}

const char* CodeFor(halo_status status) {
  switch (status) {
    case HALO_E_USAGE: return "HALO_ERR_USAGE";
    case HALO_E_UNSUPPORTED: return "HALO_ERR_UNSUPPORTED_TYPE";
    case HALO_E_FILE: return "HALO_ERR_FILE";
    case HALO_E_NOMEM:
    case HALO_E_THREAD:
    case HALO_OK: break;
  }
  return "HALO_ERR_NATIVE";
}

void ThrowIfFailed(Napi::Env env, halo_status status, const char* what, const char* message) {
  if (status != HALO_OK) throw CodedError(env, CodeFor(status), std::string(what) + ": " + message);
}

// Runs body, letting Napi::Error through and converting every other exception to a coded JS error.
template <typename Body>
Napi::Value Guarded(Napi::Env env, Body&& body) {
  try {
    return body();
  } catch (const Napi::Error&) {
    throw;
  } catch (const std::bad_alloc&) {
    throw CodedError(env, "HALO_ERR_NATIVE", "out of memory in the native kernels");
  } catch (const std::exception& e) {
    throw CodedError(env, "HALO_ERR_NATIVE", std::string("native kernels: ") + e.what());
  } catch (...) {
    throw CodedError(env, "HALO_ERR_NATIVE", "native kernels: unknown exception");
  }
}

class Args {
 public:
  Args(const Napi::CallbackInfo& info, const char* what, size_t expected) : info_(info), what_(what) {
    if (info.Length() != expected) {
      Fail("expected " + std::to_string(expected) + " arguments, got " + std::to_string(info.Length()));
    }
  }

  int64_t Int(size_t i, const char* name) const {
    const Napi::Value v = info_[i];
    if (!v.IsNumber()) Fail(std::string(name) + " must be a number");
    const double d = v.As<Napi::Number>().DoubleValue();
    if (!std::isfinite(d) || d != std::floor(d) || std::fabs(d) > kMaxSafeInteger) {
      Fail(std::string(name) + " must be a safe integer, got " + std::to_string(d));
    }
    return static_cast<int64_t>(d);
  }

  double Number(size_t i, const char* name) const {
    const Napi::Value v = info_[i];
    if (!v.IsNumber()) Fail(std::string(name) + " must be a number");
    return v.As<Napi::Number>().DoubleValue();
  }

  Napi::Float32Array F32(size_t i, const char* name) const {
    const Napi::Value v = info_[i];
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_float32_array) {
      Fail(std::string(name) + " must be a Float32Array");
    }
    return v.As<Napi::Float32Array>();
  }

  Napi::Uint8Array U8(size_t i, const char* name) const {
    const Napi::Value v = info_[i];
    if (!v.IsTypedArray() || v.As<Napi::TypedArray>().TypedArrayType() != napi_uint8_array) {
      Fail(std::string(name) + " must be a Uint8Array");
    }
    return v.As<Napi::Uint8Array>();
  }

  std::string String(size_t i, const char* name) const {
    const Napi::Value v = info_[i];
    if (!v.IsString()) Fail(std::string(name) + " must be a string");
    return v.As<Napi::String>().Utf8Value();
  }

  // (w, typeId, nRows, nCols, rowBytes) starting at argument i.
  halo_matrix Matrix(size_t i) const {
    Napi::Uint8Array data = U8(i, "w");
    const int64_t type = Int(i + 1, "typeId");
    halo_matrix m;
    m.data = data.Data();
    m.data_bytes = data.ByteLength();
    m.type = type >= INT32_MIN && type <= INT32_MAX ? static_cast<int>(type) : -1;  // any non-type id is rejected later
    m.n_rows = Int(i + 2, "nRows");
    m.n_cols = Int(i + 3, "nCols");
    m.row_bytes = Int(i + 4, "rowBytes");
    return m;
  }

  [[noreturn]] void Fail(const std::string& message) const {
    throw CodedError(info_.Env(), "HALO_ERR_USAGE", std::string(what_) + ": " + message);
  }

 private:
  const Napi::CallbackInfo& info_;
  const char* what_;
};

class KernelContext : public Napi::ObjectWrap<KernelContext> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "KernelContext",
                       {
                           InstanceMethod<&KernelContext::Matvec>("matvec"),
                           InstanceMethod<&KernelContext::Matmul>("matmul"),
                           InstanceMethod<&KernelContext::GetRow>("getRow"),
                           InstanceMethod<&KernelContext::Attend>("attend"),
                           InstanceMethod<&KernelContext::QuantizeRowQ8_0>("quantizeRowQ8_0"),
                           InstanceMethod<&KernelContext::Close>("close"),
                           InstanceAccessor<&KernelContext::Threads>("nThreads"),
                           InstanceAccessor<&KernelContext::KernelSet>("simd"),
                       });
  }

  // new KernelContext(nThreads, simd): simd "" picks the best kernel set this CPU runs.
  explicit KernelContext(const Napi::CallbackInfo& info) : Napi::ObjectWrap<KernelContext>(info) {
    Guarded(info.Env(), [&]() -> Napi::Value {
      const Args args(info, "KernelContext", 2);
      const int64_t n_threads = args.Int(0, "nThreads");
      const std::string simd = args.String(1, "simd");
      char err[HALO_ERR_LEN] = "";
      const int n = n_threads >= 1 && n_threads <= 1024 ? static_cast<int>(n_threads) : -1;
      ThrowIfFailed(info.Env(), halo_ctx_create(n, simd.c_str(), &ctx_, err, sizeof err), "KernelContext", err);
      return info.Env().Undefined();
    });
  }

  ~KernelContext() override { halo_ctx_destroy(ctx_); }

 private:
  halo_ctx* Live(const Napi::CallbackInfo& info) const {
    if (ctx_ == nullptr) throw CodedError(info.Env(), "HALO_ERR_USAGE", "the kernel context is closed");
    return ctx_;
  }

  // matvec(w, typeId, nRows, nCols, rowBytes, x, xOffset, y, yOffset, rowStart, rowEnd, colStart, colEnd)
  Napi::Value Matvec(const Napi::CallbackInfo& info) {
    return Guarded(info.Env(), [&]() -> Napi::Value {
      const Args args(info, "matvec", 13);
      const halo_matrix w = args.Matrix(0);
      Napi::Float32Array x = args.F32(5, "x");
      Napi::Float32Array y = args.F32(7, "y");
      halo_matmul_args a{};
      a.n_tokens = 1;
      a.x = x.Data();
      a.x_len = x.ElementLength();
      a.x_offset = args.Int(6, "xOffset");
      a.y = y.Data();
      a.y_len = y.ElementLength();
      a.y_offset = args.Int(8, "yOffset");
      a.row_start = args.Int(9, "rowStart");
      a.row_end = args.Int(10, "rowEnd");
      a.col_start = args.Int(11, "colStart");
      a.col_end = args.Int(12, "colEnd");
      char err[HALO_ERR_LEN] = "";
      ThrowIfFailed(info.Env(), halo_matmul(Live(info), &w, &a, err, sizeof err), "matvec", err);
      return info.Env().Undefined();
    });
  }

  // matmul(w, typeId, nRows, nCols, rowBytes, nTokens, x, xOffset, xStride, y, yOffset, yStride,
  //        rowStart, rowEnd, colStart, colEnd)
  Napi::Value Matmul(const Napi::CallbackInfo& info) {
    return Guarded(info.Env(), [&]() -> Napi::Value {
      const Args args(info, "matmul", 16);
      const halo_matrix w = args.Matrix(0);
      Napi::Float32Array x = args.F32(6, "x");
      Napi::Float32Array y = args.F32(9, "y");
      halo_matmul_args a{};
      a.n_tokens = args.Int(5, "nTokens");
      a.x = x.Data();
      a.x_len = x.ElementLength();
      a.x_offset = args.Int(7, "xOffset");
      a.x_stride = args.Int(8, "xStride");
      a.y = y.Data();
      a.y_len = y.ElementLength();
      a.y_offset = args.Int(10, "yOffset");
      a.y_stride = args.Int(11, "yStride");
      a.row_start = args.Int(12, "rowStart");
      a.row_end = args.Int(13, "rowEnd");
      a.col_start = args.Int(14, "colStart");
      a.col_end = args.Int(15, "colEnd");
      char err[HALO_ERR_LEN] = "";
      ThrowIfFailed(info.Env(), halo_matmul(Live(info), &w, &a, err, sizeof err), "matmul", err);
      return info.Env().Undefined();
    });
  }

  // getRow(w, typeId, nRows, nCols, rowBytes, row, out)
  Napi::Value GetRow(const Napi::CallbackInfo& info) {
    return Guarded(info.Env(), [&]() -> Napi::Value {
      const Args args(info, "getRow", 7);
      const halo_matrix w = args.Matrix(0);
      const int64_t row = args.Int(5, "row");
      Napi::Float32Array out = args.F32(6, "out");
      char err[HALO_ERR_LEN] = "";
      ThrowIfFailed(info.Env(), halo_get_row(Live(info), &w, row, out.Data(), out.ElementLength(), err, sizeof err),
                    "getRow", err);
      return info.Env().Undefined();
    });
  }

  // attend(nQueryHeads, headDim, q, qOffset, keys, values, valid, nPositions, scale, out, outOffset)
  Napi::Value Attend(const Napi::CallbackInfo& info) {
    return Guarded(info.Env(), [&]() -> Napi::Value {
      const Args args(info, "attend", 11);
      Napi::Float32Array q = args.F32(2, "q");
      Napi::Float32Array keys = args.F32(4, "keys");
      Napi::Float32Array values = args.F32(5, "values");
      Napi::Uint8Array valid = args.U8(6, "valid");
      Napi::Float32Array out = args.F32(9, "out");
      halo_attend_args a{};
      a.n_heads = args.Int(0, "nQueryHeads");
      a.head_dim = args.Int(1, "headDim");
      a.q = q.Data();
      a.q_len = q.ElementLength();
      a.q_offset = args.Int(3, "qOffset");
      a.keys = keys.Data();
      a.keys_len = keys.ElementLength();
      a.values = values.Data();
      a.values_len = values.ElementLength();
      a.valid = valid.Data();
      a.context_length = valid.ElementLength();
      a.n_positions = args.Int(7, "nPositions");
      a.scale = args.Number(8, "scale");
      a.out = out.Data();
      a.out_len = out.ElementLength();
      a.out_offset = args.Int(10, "outOffset");
      char err[HALO_ERR_LEN] = "";
      ThrowIfFailed(info.Env(), halo_attend(Live(info), &a, err, sizeof err), "attend", err);
      return info.Env().Undefined();
    });
  }

  // quantizeRowQ8_0(x, dst)
  Napi::Value QuantizeRowQ8_0(const Napi::CallbackInfo& info) {
    return Guarded(info.Env(), [&]() -> Napi::Value {
      const Args args(info, "quantizeRowQ8_0", 2);
      Napi::Float32Array x = args.F32(0, "x");
      Napi::Uint8Array dst = args.U8(1, "dst");
      char err[HALO_ERR_LEN] = "";
      ThrowIfFailed(info.Env(),
                    halo_quantize_row_q8_0(Live(info), x.Data(), x.ElementLength(), dst.Data(), dst.ByteLength(), err,
                                           sizeof err),
                    "quantizeRowQ8_0", err);
      return info.Env().Undefined();
    });
  }

  // close(): stops the threads now rather than at garbage collection; idempotent.
  Napi::Value Close(const Napi::CallbackInfo& info) {
    return Guarded(info.Env(), [&]() -> Napi::Value {
      halo_ctx_destroy(ctx_);
      ctx_ = nullptr;
      return info.Env().Undefined();
    });
  }

  Napi::Value Threads(const Napi::CallbackInfo& info) {
    return Guarded(info.Env(), [&]() -> Napi::Value {
      return Napi::Number::New(info.Env(), ctx_ == nullptr ? 0 : halo_ctx_threads(ctx_));
    });
  }

  Napi::Value KernelSet(const Napi::CallbackInfo& info) {
    return Guarded(info.Env(), [&]() -> Napi::Value {
      return Napi::String::New(info.Env(), ctx_ == nullptr ? "" : halo_ctx_kernel_set(ctx_));
    });
  }

  halo_ctx* ctx_ = nullptr;
};

// mmapFile(path): an ArrayBuffer over a read-only private mapping of the file, unmapped when collected.
Napi::Value MmapFile(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  return Guarded(env, [&]() -> Napi::Value {
    const Args args(info, "mmapFile", 1);
    const std::string path = args.String(0, "path");
    void* addr = nullptr;
    size_t length = 0;
    char err[HALO_ERR_LEN] = "";
    const halo_status status = halo_map_file(path.c_str(), &addr, &length, err, sizeof err);
    if (status != HALO_OK) {
      Napi::Error error = CodedError(env, CodeFor(status), path + ": " + err);
      error.Set("path", Napi::String::New(env, path));
      throw error;
    }
    if (addr == nullptr) return Napi::ArrayBuffer::New(env, 0);
    size_t* hint = new (std::nothrow) size_t(length);
    if (hint == nullptr) {
      halo_unmap_file(addr, length);
      throw CodedError(env, "HALO_ERR_NATIVE", "out of memory mapping " + path);
    }
    napi_value buffer = nullptr;
    const napi_status created = napi_create_external_arraybuffer(
        env, addr, length,
        [](napi_env, void* data, void* raw_hint) {
          size_t* mapped = static_cast<size_t*>(raw_hint);
          halo_unmap_file(data, *mapped);
          delete mapped;
        },
        hint, &buffer);
    if (created != napi_ok) {
      halo_unmap_file(addr, length);
      delete hint;
      throw CodedError(env, "HALO_ERR_FILE", path + ": the runtime refused an external ArrayBuffer of " +
                                                 std::to_string(length) + " bytes");
    }
    return Napi::Value(env, buffer);
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  exports.Set("addonVersion", Napi::Number::New(env, kAddonVersion));
  exports.Set("isa", Napi::String::New(env, halo_isa_name()));
  const halo_kernel_set* sets[8];
  const int n = halo_available_kernel_sets(sets, 8);
  Napi::Array simd = Napi::Array::New(env, static_cast<size_t>(n));
  for (int i = 0; i < n; i++) simd.Set(static_cast<uint32_t>(i), Napi::String::New(env, sets[i]->name));
  exports.Set("simd", simd);
  Napi::Object layouts = Napi::Object::New(env);
  for (const int type : {HALO_TYPE_F32, HALO_TYPE_F16, HALO_TYPE_Q4_0, HALO_TYPE_Q8_0}) {
    int64_t block_size = 0, block_bytes = 0;
    halo_type_block(type, &block_size, &block_bytes);
    Napi::Object layout = Napi::Object::New(env);
    layout.Set("blockSize", Napi::Number::New(env, static_cast<double>(block_size)));
    layout.Set("blockBytes", Napi::Number::New(env, static_cast<double>(block_bytes)));
    layouts.Set(std::to_string(type), layout);
  }
  exports.Set("typeLayouts", layouts);
  exports.Set("KernelContext", KernelContext::Define(env));
  exports.Set("mmapFile", Napi::Function::New<MmapFile>(env, "mmapFile"));
  return exports;
}

}  // namespace

NODE_API_MODULE(halo_kernels, Init)
