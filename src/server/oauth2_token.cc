// OAuth 2.0 client credentials: URL, request body, client authentication, answer, cache time.
#include "server/oauth2_token.h"

#include <arpa/inet.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>

#include <algorithm>
#include <charconv>
#include <cstring>

#include <nlohmann/json.hpp>

#include "common/encoding.h"

namespace sigil::server::oauth2 {
namespace {

bool Unreserved(unsigned char c) {
  return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' ||
         c == '.' || c == '_' || c == '~';
}

// The form body and the Basic credentials are written twice: once to size the SecretBytes,
// once into it, so the secret never sits in a growing std::string that reallocates and
// leaves copies behind.
class Sizer {
 public:
  void Raw(std::string_view s) { size_ += s.size(); }
  void Enc(std::string_view s) {
    for (unsigned char c : s) size_ += Unreserved(c) ? 1 : 3;
  }
  size_t size() const { return size_; }

 private:
  size_t size_ = 0;
};

class Writer {
 public:
  explicit Writer(size_t size) : out_(size) {}
  void Raw(std::string_view s) {
    std::memcpy(out_.data() + pos_, s.data(), s.size());
    pos_ += s.size();
  }
  void Enc(std::string_view s) {
    static constexpr char kHex[] = "0123456789ABCDEF";
    for (unsigned char c : s) {
      if (Unreserved(c)) {
        out_.data()[pos_++] = c;
      } else {
        out_.data()[pos_++] = '%';
        out_.data()[pos_++] = static_cast<uint8_t>(kHex[c >> 4]);
        out_.data()[pos_++] = static_cast<uint8_t>(kHex[c & 0xf]);
      }
    }
  }
  SecretBytes Done() && { return std::move(out_); }

 private:
  SecretBytes out_;
  size_t pos_ = 0;
};

template <class Sink>
void WriteForm(Sink& sink, const TokenRequest& r) {
  sink.Raw("grant_type=client_credentials");
  if (!r.scopes.empty()) {
    sink.Raw("&scope=");
    for (size_t i = 0; i < r.scopes.size(); ++i) {
      if (i > 0) sink.Enc(" ");
      sink.Enc(r.scopes[i]);
    }
  }
  if (r.auth == ClientAuth::kPost) {
    sink.Raw("&client_id=");
    sink.Enc(r.client_id);
    sink.Raw("&client_secret=");
    sink.Enc(r.client_secret.view());
  }
}

template <class Sink>
void WriteBasicUserPass(Sink& sink, std::string_view id, std::string_view secret) {
  sink.Enc(id);
  sink.Raw(":");
  sink.Enc(secret);
}

// Text from the endpoint as it may appear in messages and audit records: printable ASCII
// (anything else becomes '?'), at most `max` bytes, "..." when cut.
std::string Printable(std::string_view s, size_t max) {
  return PrintableAscii(s, max) + (s.size() > max ? "..." : "");
}

std::string StringMember(const nlohmann::json& j, const char* key) {
  auto it = j.find(key);
  return it != j.end() && it->is_string() ? it->get<std::string>() : std::string();
}

// Wipes the string members of a parsed answer (the access token among them).
void Wipe(nlohmann::json& j) {
  if (!j.is_object()) return;
  for (auto& [key, value] : j.items()) {
    if (!value.is_string()) continue;
    auto& text = value.get_ref<std::string&>();
    OPENSSL_cleanse(text.data(), text.size());
  }
}

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() && std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) {
           return std::tolower(static_cast<unsigned char>(x)) ==
                  std::tolower(static_cast<unsigned char>(y));
         });
}

// expires_in as milliseconds: a positive number, or a string of digits (some endpoints send
// "3600"). Capped at a year so later arithmetic cannot overflow.
Result<Millis> ExpiresIn(const nlohmann::json& v) {
  constexpr double kMaxSeconds = 365.0 * 24 * 3600;
  double seconds = 0;
  if (v.is_number_integer() || v.is_number_unsigned() || v.is_number_float()) {
    seconds = v.get<double>();
  } else if (v.is_string()) {
    const auto& s = v.get_ref<const std::string&>();
    uint64_t n = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size()) {
      return InvalidArgument("expires_in \"" + Printable(s, 32) + "\" is not a number");
    }
    seconds = static_cast<double>(n);
  } else {
    return InvalidArgument("expires_in is not a number");
  }
  if (!(seconds > 0)) return InvalidArgument("expires_in is not positive");
  seconds = std::min(seconds, kMaxSeconds);
  return Millis(static_cast<int64_t>(seconds * 1000));
}

}  // namespace

std::optional<ClientAuth> ClientAuthFromName(std::string_view name) {
  if (name == "client_secret_basic") return ClientAuth::kBasic;
  if (name == "client_secret_post") return ClientAuth::kPost;
  return std::nullopt;
}

Result<HttpsUrl> ParseHttpsUrl(std::string_view url) {
  constexpr std::string_view kScheme = "https://";
  auto bad = [&](std::string_view why) {
    return InvalidArgument("token URL \"" + Printable(url, 256) + "\": " + std::string(why));
  };
  if (!url.starts_with(kScheme)) return bad("must start with https://");
  std::string_view rest = url.substr(kScheme.size());
  const size_t end = rest.find_first_of("/?#");
  std::string_view authority = rest.substr(0, end);
  std::string_view target = end == std::string_view::npos ? "" : rest.substr(end);
  if (target.find('#') != std::string_view::npos) return bad("has a fragment");
  if (authority.find('@') != std::string_view::npos) return bad("has user information");
  HttpsUrl out;
  std::string_view port;
  if (authority.starts_with("[")) {
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return bad("unterminated IPv6 literal");
    out.host = std::string(authority.substr(1, close - 1));
    std::string_view after = authority.substr(close + 1);
    if (!after.empty()) {
      if (!after.starts_with(":")) return bad("text after the IPv6 literal");
      port = after.substr(1);
    }
    in6_addr a6{};
    if (::inet_pton(AF_INET6, out.host.c_str(), &a6) != 1) return bad("bad IPv6 literal");
    out.host_is_ip = true;
  } else {
    const size_t colon = authority.rfind(':');
    out.host = std::string(authority.substr(0, colon));
    if (colon != std::string_view::npos) port = authority.substr(colon + 1);
    in_addr a4{};
    out.host_is_ip = ::inet_pton(AF_INET, out.host.c_str(), &a4) == 1;
  }
  if (out.host.empty()) return bad("has no host");
  for (unsigned char c : out.host) {
    if (c <= 0x20 || c >= 0x7f) return bad("host has a space or a non-ASCII character");
  }
  if (authority.find(':') != std::string_view::npos && !authority.starts_with("[") &&
      port.empty()) {
    return bad("empty port");
  }
  if (!port.empty()) {
    int p = 0;
    auto [ptr, ec] = std::from_chars(port.data(), port.data() + port.size(), p);
    if (ec != std::errc() || ptr != port.data() + port.size() || p < 1 || p > 65535) {
      return bad("port must be 1-65535");
    }
    out.port = p;
  }
  // "" and "?query" get the root path.
  out.target = target.starts_with("/") ? std::string(target) : "/" + std::string(target);
  for (unsigned char c : out.target) {
    if (c <= 0x20 || c >= 0x7f) return bad("path has a space, control or non-ASCII character");
  }
  return out;
}

SecretBytes FormBody(const TokenRequest& request) {
  Sizer sizer;
  WriteForm(sizer, request);
  Writer writer(sizer.size());
  WriteForm(writer, request);
  return std::move(writer).Done();
}

SecretBytes BasicAuthorization(std::string_view client_id, const SecretBytes& client_secret) {
  Sizer sizer;
  WriteBasicUserPass(sizer, client_id, client_secret.view());
  Writer writer(sizer.size());
  WriteBasicUserPass(writer, client_id, client_secret.view());
  SecretBytes user_pass = std::move(writer).Done();

  constexpr std::string_view kPrefix = "Basic ";
  const size_t encoded = 4 * ((user_pass.size() + 2) / 3);
  SecretBytes out(kPrefix.size() + encoded + 1);  // EVP_EncodeBlock writes a NUL
  std::memcpy(out.data(), kPrefix.data(), kPrefix.size());
  const int n = EVP_EncodeBlock(out.data() + kPrefix.size(), user_pass.data(),
                                static_cast<int>(user_pass.size()));
  out.Truncate(kPrefix.size() + static_cast<size_t>(n));
  return out;
}

void ScrubSecret(EndpointFailure& failure, const SecretBytes& secret) {
  if (secret.empty()) return;
  for (std::string* text : {&failure.oauth_error, &failure.detail}) {
    size_t at = 0;
    while ((at = text->find(secret.view(), at)) != std::string::npos) {
      text->replace(at, secret.size(), SecretBytes::kRedacted);
      at += SecretBytes::kRedacted.size();
    }
  }
}

Result<AccessToken> ParseTokenResponse(int status, std::string_view body,
                                       EndpointFailure* failure) {
  EndpointFailure local;
  EndpointFailure& f = failure != nullptr ? *failure : local;
  f = EndpointFailure{};
  f.http_status = status;
  nlohmann::json j = nlohmann::json::parse(body, nullptr, /*allow_exceptions=*/false);
  const std::string http = "token endpoint answered HTTP " + std::to_string(status);

  if (status != 200) {
    if (j.is_object()) {
      f.oauth_error = Printable(StringMember(j, "error"), 64);
      f.detail = Printable(StringMember(j, "error_description"), 256);
    } else if (!body.empty()) {
      f.detail = "the answer is not a JSON error object";
    }
    Wipe(j);
    std::string message = http;
    if (!f.oauth_error.empty()) message += ": " + f.oauth_error;
    if (!f.detail.empty()) message += " (" + f.detail + ")";
    // A 4xx is the endpoint refusing this client (wrong secret, unknown scope): retrying will
    // not help until the source changes. 408/429, 5xx and redirects may pass.
    const bool rejected = status >= 400 && status < 500 && status != 408 && status != 429;
    return Error(rejected ? ErrorCode::kFailedPrecondition : ErrorCode::kUnavailable, message);
  }

  auto unusable = [&](const std::string& why) -> Error {
    Wipe(j);
    f.detail = why;
    return Unavailable(http + " but " + why);
  };
  if (!j.is_object()) return unusable("the answer is not a JSON object");
  auto token = j.find("access_token");
  if (token == j.end() || !token->is_string()) return unusable("the answer has no access_token");
  const auto& value = token->get_ref<const std::string&>();
  if (value.empty() || value.size() > kMaxAccessTokenBytes) {
    return unusable("its access_token is empty or longer than 32 KiB");
  }
  // The token goes into HTTP header values: printable ASCII without spaces only.
  if (!std::all_of(value.begin(), value.end(),
                   [](unsigned char c) { return c > 0x20 && c < 0x7f; })) {
    return unusable("its access_token has characters other than printable ASCII");
  }
  AccessToken out;
  out.token_type = "Bearer";
  if (auto type = j.find("token_type"); type != j.end()) {
    if (!type->is_string() || !EqualsIgnoreCase(type->get_ref<const std::string&>(), "bearer")) {
      return unusable("its token_type \"" +
                      Printable(type->is_string() ? type->get<std::string>() : type->dump(), 32) +
                      "\" is not Bearer");
    }
    out.token_type = type->get<std::string>();
  }
  if (auto expires = j.find("expires_in"); expires != j.end() && !expires->is_null()) {
    auto lifetime = ExpiresIn(*expires);
    if (!lifetime.ok()) return unusable("its " + lifetime.error().message());
    out.lifetime = *lifetime;
  } else {
    out.lifetime = kDefaultLifetime;
    out.lifetime_defaulted = true;
  }
  out.value = SecretBytes::Copy(value);
  Wipe(j);
  return out;
}

Millis CacheDuration(Millis lifetime) {
  constexpr Millis kMinMargin{30 * 1000};
  constexpr Millis kMaxCache{24 * 3600 * 1000};
  if (lifetime <= Millis(0)) return Millis(0);
  Millis margin = std::max(kMinMargin, lifetime / 10);
  margin = std::min(margin, lifetime / 2);
  return std::min(lifetime - margin, kMaxCache);
}

}  // namespace sigil::server::oauth2
