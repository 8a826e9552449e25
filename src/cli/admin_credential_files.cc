#include "cli/admin_credential_files.h"

#include <sys/stat.h>

#include <openssl/x509v3.h>

#include "common/file_util.h"
#include "core/keys.h"

namespace sigil::cli {
namespace {

constexpr size_t kMaxCredentialFileBytes = 1 << 20;
constexpr std::chrono::seconds kRetryAfterFailure{60};

}  // namespace

Result<void> WriteAdminCredential(server::ControlPlane& cp, const std::string& dir,
                                  bool read_only) {
  SIGIL_TRY(MakeDirs(dir, 0700));
  SIGIL_ASSIGN_OR_RETURN(auto cred, cp.IssueAdminCredential(read_only, "server"));
  SIGIL_TRY(WriteFileAtomic(dir + "/key.pem", cred.key_pem.view(), 0600));
  SIGIL_TRY(WriteFileAtomic(dir + "/cert.pem", cred.chain_pem, 0600));
  return {};
}

Result<bool> AdminCredentialFiles::RenewIfDue() {
  const auto steady_now = std::chrono::steady_clock::now();
  if (steady_now < retry_after_) return false;
  auto attempt = [&]() -> Result<bool> {
    const std::string cert_path = dir_ + "/cert.pem";
    struct stat st {};
    if (::stat(dir_.c_str(), &st) != 0) return false;  // removed by the operator: nothing to do
    if (!leaf_) {
      SIGIL_ASSIGN_OR_RETURN(std::string pem, ReadFile(cert_path, kMaxCredentialFileBytes));
      SIGIL_ASSIGN_OR_RETURN(auto chain, core::ParseCertificatesPem(pem));
      if (chain.empty()) return InvalidArgument(cert_path + ": no certificate");
      leaf_ = chain.front();
    }
    const TimePoint now = cp_.clock().Now();
    const TimePoint half = leaf_->NotBefore() + (leaf_->NotAfter() - leaf_->NotBefore()) / 2;
    const core::Certificate signer = cp_.SigningCa();
    const bool other_signer = X509_check_issued(signer.get(), leaf_->get()) != X509_V_OK;
    if (now < half && !other_signer) return false;
    SIGIL_ASSIGN_OR_RETURN(SecretBytes key_pem,
                           ReadSecretFile(dir_ + "/key.pem", kMaxCredentialFileBytes));
    SIGIL_ASSIGN_OR_RETURN(core::PrivateKey key, core::PrivateKey::FromPem(key_pem.view()));
    SIGIL_ASSIGN_OR_RETURN(server::AdminCredential cred,
                           cp_.IssueAdminCredential(read_only_, "server", &key));
    SIGIL_TRY(WriteFileAtomic(cert_path, cred.chain_pem, 0600));
    SIGIL_ASSIGN_OR_RETURN(auto chain, core::ParseCertificatesPem(cred.chain_pem));
    leaf_ = chain.front();
    return true;
  };
  Result<bool> renewed = attempt();
  if (!renewed.ok()) {
    retry_after_ = steady_now + kRetryAfterFailure;
    return std::move(renewed).error().WithContext("admin credential " + dir_);
  }
  return renewed;
}

}  // namespace sigil::cli
