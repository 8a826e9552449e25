// Error currency of every Sigil library: Result<T> holds either a value or an Error.
//
// Modelled on std::expected (and absl::StatusOr). We carry our own small type because the
// clang used for libFuzzer builds (clang 14 with libstdc++ 12) does not expose <expected>.
// Libraries never throw: untrusted input always yields an Error with a message that names
// the offending field.
#pragma once

#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace sigil {

enum class ErrorCode {
  kInvalidArgument,     // malformed or out-of-policy input
  kNotFound,            // the named thing does not exist
  kAlreadyExists,       // create collided with an existing thing
  kPermissionDenied,    // caller is known but not allowed
  kUnauthenticated,     // caller could not be identified / signature invalid
  kFailedPrecondition,  // state does not allow the operation (e.g. expired CA)
  kResourceExhausted,   // a size or count bound was hit
  kUnavailable,         // transient; retry with backoff
  kDeadlineExceeded,
  kAborted,  // concurrency conflict (e.g. stale resourceVersion)
  kUnimplemented,
  kInternal,  // a bug or an unexpected library failure
};

std::string_view ErrorCodeName(ErrorCode code);

class Error {
 public:
  Error(ErrorCode code, std::string message) : code_(code), message_(std::move(message)) {}

  ErrorCode code() const { return code_; }
  const std::string& message() const { return message_; }
  // "InvalidArgument: jwt: header: alg \"none\" is not allowed"
  std::string ToString() const;

  // Returns the same error with "context: " prepended to the message.
  Error WithContext(std::string_view context) const&;
  Error WithContext(std::string_view context) &&;

 private:
  ErrorCode code_;
  std::string message_;
};

inline Error InvalidArgument(std::string msg) {
  return {ErrorCode::kInvalidArgument, std::move(msg)};
}
inline Error NotFound(std::string msg) { return {ErrorCode::kNotFound, std::move(msg)}; }
inline Error AlreadyExists(std::string msg) { return {ErrorCode::kAlreadyExists, std::move(msg)}; }
inline Error PermissionDenied(std::string msg) {
  return {ErrorCode::kPermissionDenied, std::move(msg)};
}
inline Error Unauthenticated(std::string msg) {
  return {ErrorCode::kUnauthenticated, std::move(msg)};
}
inline Error FailedPrecondition(std::string msg) {
  return {ErrorCode::kFailedPrecondition, std::move(msg)};
}
inline Error ResourceExhausted(std::string msg) {
  return {ErrorCode::kResourceExhausted, std::move(msg)};
}
inline Error Unavailable(std::string msg) { return {ErrorCode::kUnavailable, std::move(msg)}; }
inline Error Internal(std::string msg) { return {ErrorCode::kInternal, std::move(msg)}; }

template <class T>
class [[nodiscard]] Result {
 public:
  using value_type = T;

  Result(const T& v) : v_(std::in_place_index<0>, v) {}  // NOLINT(google-explicit-constructor)
  Result(T&& v) : v_(std::in_place_index<0>, std::move(v)) {}    // NOLINT
  Result(Error e) : v_(std::in_place_index<1>, std::move(e)) {}  // NOLINT
  template <class U>
  requires(std::is_constructible_v<T, U&&> && !std::is_same_v<std::decay_t<U>, T> &&
           !std::is_same_v<std::decay_t<U>, Error> && !std::is_same_v<std::decay_t<U>, Result<T>>)
      Result(U&& u)
      : v_(std::in_place_index<0>, std::forward<U>(u)) {}  // NOLINT

  bool ok() const { return v_.index() == 0; }
  explicit operator bool() const { return ok(); }

  T& value() & { return Checked(), std::get<0>(v_); }
  const T& value() const& { return Checked(), std::get<0>(v_); }
  T&& value() && { return Checked(), std::get<0>(std::move(v_)); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T&& operator*() && { return std::move(*this).value(); }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }

  const Error& error() const& { return std::get<1>(v_); }
  Error&& error() && { return std::get<1>(std::move(v_)); }

 private:
  // Accessing the value of an error result is a programming bug: abort loudly.
  void Checked() const {
    if (!ok()) std::abort();
  }
  std::variant<T, Error> v_;
};

template <>
class [[nodiscard]] Result<void> {
 public:
  Result() = default;
  Result(Error e) : e_(std::move(e)) {}  // NOLINT(google-explicit-constructor)

  bool ok() const { return !e_.has_value(); }
  explicit operator bool() const { return ok(); }
  void value() const {
    if (!ok()) std::abort();
  }
  const Error& error() const& { return *e_; }
  Error&& error() && { return *std::move(e_); }

 private:
  std::optional<Error> e_;
};

inline Result<void> Ok() { return {}; }

}  // namespace sigil

#define SIGIL_CONCAT_INNER(a, b) a##b
#define SIGIL_CONCAT(a, b) SIGIL_CONCAT_INNER(a, b)

// Evaluates a Result-returning expression and returns its error from the enclosing function.
#define SIGIL_TRY(expr)                            \
  do {                                             \
    auto sigil_try_result_ = (expr);               \
    if (!sigil_try_result_.ok()) {                 \
      return std::move(sigil_try_result_).error(); \
    }                                              \
  } while (0)

// SIGIL_ASSIGN_OR_RETURN(auto x, Foo()); binds the value or returns the error.
#define SIGIL_ASSIGN_OR_RETURN(lhs, expr) \
  SIGIL_ASSIGN_OR_RETURN_IMPL(SIGIL_CONCAT(sigil_aor_, __LINE__), lhs, expr)
// NOLINTBEGIN(bugprone-macro-parentheses): `lhs` is a declaration, `tmp` a fresh name.
#define SIGIL_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr) \
  auto tmp = (expr);                                \
  if (!tmp.ok()) return std::move(tmp).error();     \
  lhs = std::move(tmp).value()
// NOLINTEND(bugprone-macro-parentheses)
