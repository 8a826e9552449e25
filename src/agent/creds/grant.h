// CredentialGrant: a credential the server granted to an attested process (FetchCredential on
// the agent API), as the agent holds it.
//
// Custody: the secret and any extra secret parts (an AWS session token, the PKCS#8 key of an
// SVID) are SecretBytes, so they live in the OpenSSL secure heap once the process is hardened
// (mlocked, MADV_DONTDUMP, wiped when freed). They are reachable only through WithSecret(),
// whose views are valid during the callback alone: callers use them (format a file, sign a
// request, build a header) and do not keep std::string copies. Nothing here logs.
//
// GrantFromResponse moves the secret parts out of the protobuf response and wipes the
// response's strings. Beyond this code's reach: gRPC's receive buffers (the serialized
// response) are ordinary heap memory that gRPC frees without wiping; the agent process is
// non-dumpable and excluded from core dumps (custody/harden.h), which is what protects them.
//
// Immutable after construction; safe to share between threads.
#pragma once

#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "common/clock.h"
#include "common/result.h"
#include "common/secret_bytes.h"
#include "proto/agent.pb.h"

namespace sigil::agent::creds {

// What may be known, logged and audited about a grant.
struct GrantInfo {
  std::string binding;
  std::string source;       // the CredentialSource ("" for the process's own SVID)
  std::string source_type;  // static | aws | jwt | oauth2-client-credentials | x509-svid
  std::string spiffe_id;    // the identity the grant was made for
  std::map<std::string, std::string> attributes;  // accessKeyId, region, audience
  std::string chain_pem;  // x509-svid only: the certificate chain, leaf first (public)
  TimePoint fetched_at;
  TimePoint expires_at;
};

class CredentialGrant;

// Borrowed views of a grant's secret parts; valid only inside WithSecret().
class SecretParts {
 public:
  std::string_view secret() const;
  // A further secret part by name ("sessionToken" for aws), if the grant has it.
  std::optional<std::string_view> extra(std::string_view name) const;

 private:
  friend class CredentialGrant;
  explicit SecretParts(const CredentialGrant& grant) : grant_(grant) {}
  const CredentialGrant& grant_;
};

class CredentialGrant {
 public:
  CredentialGrant(GrantInfo info, SecretBytes secret,
                  std::vector<std::pair<std::string, SecretBytes>> extra_secrets)
      : info_(std::move(info)), secret_(std::move(secret)), extra_(std::move(extra_secrets)) {}
  CredentialGrant(const CredentialGrant&) = delete;
  CredentialGrant& operator=(const CredentialGrant&) = delete;

  const GrantInfo& info() const { return info_; }

  template <typename Fn>
  decltype(auto) WithSecret(Fn&& fn) const {
    return std::invoke(std::forward<Fn>(fn), SecretParts(*this));
  }

 private:
  friend class SecretParts;
  const GrantInfo info_;
  const SecretBytes secret_;
  const std::vector<std::pair<std::string, SecretBytes>> extra_;
};

// Takes the grant out of a FetchCredential response: secret parts into SecretBytes, the
// response's copies wiped (OPENSSL_cleanse) whatever the outcome. `binding` is the name asked
// for; `now` becomes fetched_at. A response without a future expiry is InvalidArgument.
Result<std::shared_ptr<const CredentialGrant>> GrantFromResponse(
    const std::string& binding, sigil::agent::v1::FetchCredentialResponse& response, TimePoint now);

// Wipes the secret fields of a response in place (for error paths).
void WipeResponse(sigil::agent::v1::FetchCredentialResponse& response);

// What Agent::FetchCredential returns: a shared grant plus how it was obtained.
class CredentialGrantHandle {
 public:
  CredentialGrantHandle(std::shared_ptr<const CredentialGrant> grant, bool server_audited)
      : grant_(std::move(grant)), server_audited_(server_audited) {}

  const GrantInfo& info() const { return grant_->info(); }
  // True when the server granted this for the very process asked about and audited it
  // (credential.grant with its pid). False for a grant served from the agent's cache, or the
  // process's own SVID: the caller records that use itself (Agent::ReportEvent,
  // type "credential.use") if it is a use.
  bool server_audited() const { return server_audited_; }

  template <typename Fn>
  decltype(auto) WithSecret(Fn&& fn) const {
    return grant_->WithSecret(std::forward<Fn>(fn));
  }

 private:
  std::shared_ptr<const CredentialGrant> grant_;
  bool server_audited_;
};

}  // namespace sigil::agent::creds
