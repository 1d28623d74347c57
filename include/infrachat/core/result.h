// Errors on the request path are values: Result<T> holds either a T or an Error with a canonical
// status code. Conversion to grpc::Status happens once, at the gRPC edge (see grpc_status.h).
#pragma once

#include <cassert>
#include <string>
#include <utility>
#include <variant>

namespace infrachat {

// Same numbers as the canonical gRPC status codes, so an in-stream Error frame can carry them
// as-is, without this header depending on gRPC.
enum class Code : int {
  kOk = 0,
  kCancelled = 1,
  kUnknown = 2,
  kInvalidArgument = 3,
  kDeadlineExceeded = 4,
  kNotFound = 5,
  kAlreadyExists = 6,
  kPermissionDenied = 7,
  kResourceExhausted = 8,
  kFailedPrecondition = 9,
  kAborted = 10,
  kOutOfRange = 11,
  kUnimplemented = 12,
  kInternal = 13,
  kUnavailable = 14,
  kDataLoss = 15,
  kUnauthenticated = 16,
};

// Canonical upper-case name of a code, e.g. "PERMISSION_DENIED".
const char* CodeName(Code code);

struct Error {
  Code code = Code::kUnknown;
  std::string message;
};

inline Error MakeError(Code code, std::string message) { return Error{code, std::move(message)}; }

// Either a value or an Error. Cheap to move; not thread-safe (like any value type).
template <typename T>
class [[nodiscard]] Result {
 public:
  Result(T value) : state_(std::move(value)) {}      // NOLINT(google-explicit-constructor)
  Result(Error error) : state_(std::move(error)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return std::holds_alternative<T>(state_); }
  explicit operator bool() const { return ok(); }

  T& value() & { return std::get<T>(state_); }
  const T& value() const& { return std::get<T>(state_); }
  T&& value() && { return std::get<T>(std::move(state_)); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }

  const Error& error() const { return std::get<Error>(state_); }
  Code code() const { return ok() ? Code::kOk : error().code; }

 private:
  std::variant<T, Error> state_;
};

// Result of an operation that yields nothing but can fail.
template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error error) : error_(std::move(error)), ok_(false) {}  // NOLINT

  bool ok() const { return ok_; }
  explicit operator bool() const { return ok_; }
  const Error& error() const { return error_; }
  Code code() const { return ok_ ? Code::kOk : error_.code; }

 private:
  Error error_;
  bool ok_ = true;
};

inline Result<void> Ok() { return {}; }

}  // namespace infrachat
