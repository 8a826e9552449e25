#include "agent/creds/file_content.h"

#include <openssl/evp.h>

#include <cstring>
#include <vector>

namespace sigil::agent::creds {
namespace {

constexpr size_t kPemLine = 64;

// Concatenates pieces (literals and borrowed secret views) into one SecretBytes.
SecretBytes Join(std::initializer_list<std::string_view> parts) {
  size_t total = 0;
  for (auto p : parts) total += p.size();
  SecretBytes out(total);
  size_t at = 0;
  for (auto p : parts) {
    if (!p.empty()) std::memcpy(out.data() + at, p.data(), p.size());
    at += p.size();
  }
  return out;
}

bool HasLineBreakOrNul(std::string_view v) {
  return v.find_first_of(std::string_view("\r\n\0", 3)) != std::string_view::npos;
}

// PEM "PRIVATE KEY" block of DER bytes, written straight into the secure heap.
SecretBytes PemPrivateKey(std::string_view der) {
  SecretBytes b64(4 * ((der.size() + 2) / 3) + 1);  // EVP_EncodeBlock writes a NUL
  const int n = EVP_EncodeBlock(b64.data(), reinterpret_cast<const unsigned char*>(der.data()),
                                static_cast<int>(der.size()));
  b64.Truncate(n > 0 ? static_cast<size_t>(n) : 0);
  constexpr std::string_view kBegin = "-----BEGIN PRIVATE KEY-----\n";
  constexpr std::string_view kEnd = "-----END PRIVATE KEY-----\n";
  const size_t lines = (b64.size() + kPemLine - 1) / kPemLine;
  SecretBytes out(kBegin.size() + b64.size() + lines + kEnd.size());
  size_t at = 0;
  auto put = [&](std::string_view s) {
    std::memcpy(out.data() + at, s.data(), s.size());
    at += s.size();
  };
  put(kBegin);
  for (size_t i = 0; i < b64.size(); i += kPemLine) {
    put(b64.view().substr(i, kPemLine));
    put("\n");
  }
  put(kEnd);
  return out;
}

}  // namespace

Result<SecretBytes> RenderFile(const FileDelivery& file, const CredentialGrantHandle& grant) {
  const GrantInfo& info = grant.info();
  switch (file.format) {
    case FileFormat::kRaw:
      return grant.WithSecret([](const SecretParts& s) { return SecretBytes::Copy(s.secret()); });
    case FileFormat::kEnv:
      return grant.WithSecret([&](const SecretParts& s) -> Result<SecretBytes> {
        if (HasLineBreakOrNul(s.secret())) {
          return FailedPrecondition("binding " + info.binding +
                                    ": the secret contains a line break or NUL and cannot be "
                                    "written as an env line");
        }
        return Join({file.env_name, "=", s.secret(), "\n"});
      });
    case FileFormat::kAwsCredentials: {
      auto id = info.attributes.find("accessKeyId");
      if (info.source_type != "aws" || id == info.attributes.end()) {
        return FailedPrecondition("binding " + info.binding +
                                  ": format aws-credentials needs an aws source (source " +
                                  info.source + " is " + info.source_type + ")");
      }
      return grant.WithSecret([&](const SecretParts& s) -> Result<SecretBytes> {
        auto token = s.extra("sessionToken");
        if (HasLineBreakOrNul(id->second) || HasLineBreakOrNul(s.secret()) ||
            (token && HasLineBreakOrNul(*token))) {
          return FailedPrecondition("binding " + info.binding +
                                    ": an AWS credential part contains a line break or NUL");
        }
        if (token && !token->empty()) {
          return Join({"[default]\naws_access_key_id=", id->second, "\naws_secret_access_key=",
                       s.secret(), "\naws_session_token=", *token, "\n"});
        }
        return Join({"[default]\naws_access_key_id=", id->second,
                     "\naws_secret_access_key=", s.secret(), "\n"});
      });
    }
    case FileFormat::kSvidPem: {
      if (info.source_type != "x509-svid" || info.chain_pem.empty()) {
        return FailedPrecondition("binding " + info.binding +
                                  ": format svid-pem needs the process's own X.509-SVID");
      }
      return grant.WithSecret([&](const SecretParts& s) {
        SecretBytes key = PemPrivateKey(s.secret());
        return Join({info.chain_pem, key.view()});
      });
    }
  }
  return Internal("binding " + info.binding + ": unknown file format");
}

}  // namespace sigil::agent::creds
