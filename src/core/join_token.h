// Node join tokens: "SJT1.<id>.<secret>.<ca-sha256>".
//
//   id         8 lowercase hex: names the token in audit records and listings (not secret)
//   secret     32 base64url characters (192 random bits)
//   ca-sha256  64 lowercase hex: SHA-256 of the trust domain's root CA certificate (DER), so
//              the agent authenticates the server on first contact (as kubeadm's
//              --discovery-token-ca-cert-hash does)
//
// The server stores only StorageHash() = hex SHA-256("<id>.<secret>"). Parse errors never
// repeat the token text. Move-only (holds the secret).
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"
#include "common/secret_bytes.h"
#include "core/certificate.h"

namespace sigil::core {

class JoinToken {
 public:
  static Result<JoinToken> Generate(const Certificate& ca_root);
  static Result<JoinToken> Parse(std::string_view text);

  JoinToken(JoinToken&&) noexcept = default;
  JoinToken& operator=(JoinToken&&) noexcept = default;

  const std::string& id() const { return id_; }
  const std::string& ca_sha256() const { return ca_sha256_; }
  // The full token, to hand to an operator once. Never log it.
  SecretBytes Text() const;
  // What the store keeps and looks tokens up by.
  std::string StorageHash() const;
  // True when `root` is the CA certificate this token pins (constant-time compare).
  bool PinsCa(const Certificate& root) const;

 private:
  JoinToken(std::string id, SecretBytes secret, std::string ca_sha256)
      : id_(std::move(id)), secret_(std::move(secret)), ca_sha256_(std::move(ca_sha256)) {}
  std::string id_;
  SecretBytes secret_;
  std::string ca_sha256_;
};

}  // namespace sigil::core
