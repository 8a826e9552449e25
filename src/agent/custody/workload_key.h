// WorkloadKey: an X.509-SVID key pair generated inside the agent for one workload identity.
//
// Custody contract (verified by workload_key_test.cc on this machine's OpenSSL 3.0):
// - Generate() refuses to run unless the OpenSSL secure heap is initialised (HardenProcess):
//   the EC P-256 private scalar then lives only in the mlocked, MADV_DONTDUMP arena, and
//   OpenSSL wipes it there when the key is freed.
// - Nothing here writes a file or any other fd; the key never leaves the process except as
//   ExportPkcs8Der() for the Workload API, which must hand it to the workload.
// - ExportPkcs8Der() writes the PKCS#8 bytes straight into SecretBytes (secure heap) from the
//   key's own parameters. It deliberately does not use core::PrivateKey::ToPkcs8Der/Pem nor
//   i2d/PEM encoders: in OpenSSL 3.0 those go through OSSL_ENCODER / ASN1 buffers on the normal
//   heap that are freed without being wiped (measured: the scalar stays readable in freed
//   heap memory). Key generation, CSR signing and Sign() leave no copy outside the arena.
// - private key bytes never appear in errors, logs or stream output.
//
// The SPIFFE ID is bound to the key for bookkeeping; the CSR itself is core::CreateCsrDer's
// (subject O=Sigil, no extensions) because the issuer ignores every name in a CSR: the ID
// travels in the SignWorkloadSVID request next to the CSR.
//
// Move-only. Const methods are safe to call concurrently.
#pragma once

#include <cstdint>
#include <span>
#include <vector>

#include "common/result.h"
#include "common/secret_bytes.h"
#include "core/keys.h"
#include "core/spiffe_id.h"

namespace sigil::agent::custody {

// Length of ExportPkcs8Der(): PrivateKeyInfo{v0, id-ecPublicKey/prime256v1,
// ECPrivateKey{v1, 32-byte scalar, [1] uncompressed point}} (RFC 5208, RFC 5915).
inline constexpr size_t kP256Pkcs8DerSize = 138;

class WorkloadKey {
 public:
  // FailedPrecondition without the secure heap; InvalidArgument for a trust-domain ID (no path).
  static Result<WorkloadKey> Generate(core::SpiffeId id);

  WorkloadKey(WorkloadKey&&) noexcept = default;
  WorkloadKey& operator=(WorkloadKey&&) noexcept = default;
  WorkloadKey(const WorkloadKey&) = delete;
  WorkloadKey& operator=(const WorkloadKey&) = delete;

  const core::SpiffeId& spiffe_id() const { return id_; }
  const core::PublicKey& public_key() const { return public_; }

  // PKCS#10 CSR (DER) signed by this key, for SignWorkloadSVID{spiffe_id(), csr}.
  Result<std::vector<uint8_t>> CreateCsrDer() const;

  // Unencrypted PKCS#8 DER (kP256Pkcs8DerSize bytes) for X509SVID.x509_svid_key. The only
  // export; the copy that protobuf/gRPC then make for the wire is outside this class's reach.
  Result<SecretBytes> ExportPkcs8Der() const;

  // ECDSA P-256 / SHA-256 signature (DER), for TLS done by the agent on the workload's behalf.
  Result<std::vector<uint8_t>> Sign(std::span<const uint8_t> data) const;

  // Borrowed, for SSL_CTX_use_PrivateKey and the like. Do not serialise it with OpenSSL
  // encoders (see above): use ExportPkcs8Der().
  EVP_PKEY* get() const { return key_.get(); }

 private:
  WorkloadKey(core::SpiffeId id, core::PrivateKey key, core::PublicKey pub)
      : id_(std::move(id)), key_(std::move(key)), public_(std::move(pub)) {}
  core::SpiffeId id_;
  core::PrivateKey key_;
  core::PublicKey public_;
};

}  // namespace sigil::agent::custody
