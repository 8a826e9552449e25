// The admin client credentials the server keeps in its data directory (DIR/admin,
// DIR/admin-readonly: cert.pem, key.pem, bundle.pem), renewed while the server runs.
//
// The certificate is reissued for the key already in key.pem (so a client reading the pair
// during a renewal never sees a mismatch) once half of its lifetime has passed, and as soon as
// a CA rotation activated another CA: the old CA can then leave the bundle once the certificate
// it issued expires. Copies of these files elsewhere are the operator's to refresh.
#pragma once

#include <chrono>
#include <optional>
#include <string>

#include "common/result.h"
#include "core/certificate.h"
#include "server/control_plane.h"

namespace sigil::cli {

// Issues a new admin credential (read-only or read-write) into DIR (created 0700):
// key.pem and cert.pem, both 0600. On first start and by `sigil server restore`.
Result<void> WriteAdminCredential(server::ControlPlane& cp, const std::string& dir, bool read_only);

class AdminCredentialFiles {
 public:
  AdminCredentialFiles(server::ControlPlane& cp, std::string dir, bool read_only)
      : cp_(cp), dir_(std::move(dir)), read_only_(read_only) {}

  // Reissues cert.pem when due (see above). Returns true when it did. A missing directory is
  // left alone; a missing or unreadable pair in it is an error, retried no sooner than a minute
  // later (the server runs on without it).
  Result<bool> RenewIfDue();

  const std::string& dir() const { return dir_; }

 private:
  server::ControlPlane& cp_;
  const std::string dir_;
  const bool read_only_;
  std::optional<core::Certificate> leaf_;  // cert.pem's leaf, read once
  std::chrono::steady_clock::time_point retry_after_{};
};

}  // namespace sigil::cli
