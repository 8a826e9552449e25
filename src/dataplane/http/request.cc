#include "dataplane/http/request.h"

#include <limits>

namespace sigil::dataplane::http {
namespace {

// Content-Length values above this are refused (no real body is this large; keeps arithmetic
// far from overflow).
constexpr uint64_t kMaxContentLength = uint64_t{1} << 62;

bool IsDigit(char c) { return c >= '0' && c <= '9'; }

bool IsValidTargetByte(char ch) {
  const auto c = static_cast<unsigned char>(ch);
  return c > 0x20 && c < 0x7f && c != '#';
}

// authority-form for CONNECT: host ":" port, no path, query or userinfo.
bool IsAuthorityForm(std::string_view target) {
  const size_t colon = target.rfind(':');
  if (colon == std::string_view::npos || colon == 0 || colon + 1 == target.size()) return false;
  for (char c : target.substr(colon + 1)) {
    if (!IsDigit(c)) return false;
  }
  for (char c : target.substr(0, colon)) {
    if (c == '/' || c == '?' || c == '@') return false;
  }
  return true;
}

bool IsAbsoluteForm(std::string_view target) {
  const size_t sep = target.find("://");
  if (sep == std::string_view::npos || sep == 0) return false;
  for (size_t i = 0; i < sep; ++i) {
    const char c = target[i];
    const bool alpha = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
    if (!alpha && (i == 0 || !(IsDigit(c) || c == '+' || c == '-' || c == '.'))) return false;
  }
  return true;
}

// Host = uri-host [ ":" port ]: unreserved, sub-delims, pct-encoded, ':' and IP-literal
// brackets. Empty is allowed (RFC 9112 section 3.2 for targets without an authority).
bool IsValidHostValue(std::string_view v) {
  for (char c : v) {
    const bool ok = IsDigit(c) || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                    std::string_view("-._~!$&'()*+,;=:%[]").find(c) != std::string_view::npos;
    if (!ok) return false;
  }
  return true;
}

Result<BodyFraming> RequestFraming(const RequestHead& head) {
  bool have_length = false;
  uint64_t length = 0;
  std::vector<std::string_view> codings;
  bool have_te = false;
  for (const HeaderField& f : head.headers) {
    if (EqualsIgnoreCase(f.name, "content-length")) {
      const auto elements = SplitList(f.value);
      if (elements.empty()) return InvalidArgument("empty Content-Length");
      for (std::string_view e : elements) {
        uint64_t v = 0;
        for (char c : e) {
          if (!IsDigit(c)) return InvalidArgument("Content-Length is not a number");
          if (v > kMaxContentLength / 10) return InvalidArgument("Content-Length too large");
          v = v * 10 + static_cast<uint64_t>(c - '0');
        }
        if (v > kMaxContentLength) return InvalidArgument("Content-Length too large");
        if (have_length && v != length) return InvalidArgument("conflicting Content-Length values");
        have_length = true;
        length = v;
      }
    } else if (EqualsIgnoreCase(f.name, "transfer-encoding")) {
      have_te = true;
      for (std::string_view e : SplitList(f.value)) codings.push_back(e);
    }
  }
  if (have_te) {
    if (head.minor_version == 0) return InvalidArgument("Transfer-Encoding in an HTTP/1.0 request");
    if (have_length) return InvalidArgument("both Content-Length and Transfer-Encoding");
    if (codings.empty()) return InvalidArgument("empty Transfer-Encoding");
    for (std::string_view coding : codings) {
      if (!IsToken(coding)) return InvalidArgument("malformed Transfer-Encoding");
    }
    if (!EqualsIgnoreCase(codings.back(), "chunked")) {
      return InvalidArgument("final transfer coding is not chunked");
    }
    for (size_t i = 0; i + 1 < codings.size(); ++i) {
      if (EqualsIgnoreCase(codings[i], "chunked")) return InvalidArgument("chunked applied twice");
    }
    return BodyFraming{BodyKind::kChunked, 0};
  }
  if (have_length) return BodyFraming{BodyKind::kLength, length};
  return BodyFraming{};
}

}  // namespace

const HeaderField* RequestHead::Find(std::string_view name) const {
  for (const HeaderField& f : headers) {
    if (EqualsIgnoreCase(f.name, name)) return &f;
  }
  return nullptr;
}

size_t RequestHead::Count(std::string_view name) const {
  size_t n = 0;
  for (const HeaderField& f : headers) n += EqualsIgnoreCase(f.name, name) ? 1 : 0;
  return n;
}

size_t RequestHead::Remove(std::string_view name) {
  return std::erase_if(headers,
                       [&](const HeaderField& f) { return EqualsIgnoreCase(f.name, name); });
}

void RequestHead::Add(std::string name, std::string value) {
  headers.push_back(HeaderField{std::move(name), std::move(value)});
}

std::string RequestHead::Serialize() const {
  size_t size = method.size() + target.size() + 14;
  for (const HeaderField& f : headers) size += f.name.size() + f.value.size() + 4;
  std::string out;
  out.reserve(size);
  out.append(method).append(" ").append(target).append(" HTTP/1.");
  out.push_back(minor_version == 0 ? '0' : '1');
  out.append("\r\n");
  for (const HeaderField& f : headers)
    out.append(f.name).append(": ").append(f.value).append("\r\n");
  out.append("\r\n");
  return out;
}

Result<RequestHead> ParseRequestLine(std::string_view line) {
  const size_t sp1 = line.find(' ');
  const size_t sp2 = sp1 == std::string_view::npos ? sp1 : line.find(' ', sp1 + 1);
  if (sp2 == std::string_view::npos || line.find(' ', sp2 + 1) != std::string_view::npos) {
    return InvalidArgument("request line is not \"method SP target SP version\"");
  }
  RequestHead head;
  head.method = std::string(line.substr(0, sp1));
  head.target = std::string(line.substr(sp1 + 1, sp2 - sp1 - 1));
  const std::string_view version = line.substr(sp2 + 1);
  if (version == "HTTP/1.1") {
    head.minor_version = 1;
  } else if (version == "HTTP/1.0") {
    head.minor_version = 0;
  } else if (version.size() == 8 && version.starts_with("HTTP/") && IsDigit(version[5]) &&
             version[6] == '.' && IsDigit(version[7])) {
    return Error(ErrorCode::kUnimplemented, "HTTP version not supported");
  } else {
    return InvalidArgument("malformed HTTP version");
  }
  if (!IsToken(head.method)) return InvalidArgument("method is not a token");
  return head;
}

Result<RequestInfo> AnalyzeRequest(const RequestHead& head, const HeadLimits& limits) {
  RequestInfo info;
  if (!IsToken(head.method)) return InvalidArgument("method is not a token");
  if (head.minor_version != 0 && head.minor_version != 1) {
    return Error(ErrorCode::kUnimplemented, "HTTP version not supported");
  }
  if (head.target.empty()) return InvalidArgument("empty request target");
  for (char c : head.target) {
    if (!IsValidTargetByte(c)) return InvalidArgument("invalid character in request target");
  }
  info.connect = head.method == "CONNECT";
  if (info.connect) {
    if (!IsAuthorityForm(head.target)) return InvalidArgument("CONNECT target is not host:port");
    info.form = TargetForm::kAuthority;
  } else if (head.target == "*") {
    if (head.method != "OPTIONS")
      return InvalidArgument("'*' target on a method other than OPTIONS");
    info.form = TargetForm::kAsterisk;
  } else if (head.target[0] == '/') {
    info.form = TargetForm::kOrigin;
  } else if (IsAbsoluteForm(head.target)) {
    info.form = TargetForm::kAbsolute;
  } else {
    return InvalidArgument("malformed request target");
  }

  if (head.headers.size() > limits.max_fields) return ResourceExhausted("too many header fields");
  size_t hosts = 0;
  for (const HeaderField& f : head.headers) {
    if (!IsToken(f.name)) return InvalidArgument("field name is not a token");
    if (!IsValidFieldValue(f.value) || TrimOws(f.value).size() != f.value.size()) {
      return InvalidArgument("invalid value of field \"" + f.name + "\"");
    }
    if (EqualsIgnoreCase(f.name, "host")) {
      ++hosts;
      if (!IsValidHostValue(f.value)) return InvalidArgument("invalid Host value");
    }
  }
  if (hosts > 1) return InvalidArgument("more than one Host field");
  if (hosts == 0 && head.minor_version == 1)
    return InvalidArgument("HTTP/1.1 request without Host");

  SIGIL_ASSIGN_OR_RETURN(info.body, RequestFraming(head));
  if (info.connect && info.body.kind != BodyKind::kNone) {
    return InvalidArgument("CONNECT request with a body");
  }

  bool close = false, keep_alive = false, upgrade_option = false;
  for (const HeaderField& f : head.headers) {
    if (EqualsIgnoreCase(f.name, "connection")) {
      close = close || ListContains(f.value, "close");
      keep_alive = keep_alive || ListContains(f.value, "keep-alive");
      upgrade_option = upgrade_option || ListContains(f.value, "upgrade");
    } else if (EqualsIgnoreCase(f.name, "expect") && head.minor_version == 1) {
      // RFC 9110 section 10.1.1: a 100-continue expectation in HTTP/1.0 is ignored.
      info.expect_continue = info.expect_continue || ListContains(f.value, "100-continue");
    }
  }
  info.keep_alive = !close && (head.minor_version == 1 || keep_alive);
  // RFC 9110 section 7.8: Upgrade in an HTTP/1.0 request is ignored.
  info.upgrade = upgrade_option && head.minor_version == 1 && head.Find("upgrade") != nullptr;
  return info;
}

void CollapseContentLength(RequestHead& head, const RequestInfo& info) {
  if (info.body.kind != BodyKind::kLength) return;
  size_t first = head.headers.size();
  size_t count = 0;
  for (size_t i = 0; i < head.headers.size(); ++i) {
    if (EqualsIgnoreCase(head.headers[i].name, "content-length")) {
      if (count++ == 0) first = i;
    }
  }
  const std::string value = std::to_string(info.body.length);
  if (count == 1 && head.headers[first].value == value) return;
  head.headers[first].value = value;
  std::vector<HeaderField> kept;
  kept.reserve(head.headers.size() - count + 1);
  for (size_t i = 0; i < head.headers.size(); ++i) {
    if (i == first || !EqualsIgnoreCase(head.headers[i].name, "content-length")) {
      kept.push_back(std::move(head.headers[i]));
    }
  }
  head.headers = std::move(kept);
}

}  // namespace sigil::dataplane::http
