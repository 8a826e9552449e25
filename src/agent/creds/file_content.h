// The bytes of a credential file (`delivery: file`) for a grant, per the binding's format:
//
//   raw              the secret exactly
//   env              NAME=secret\n                       (envName; the secret may not
//                                                       contain CR, LF or NUL)
//   aws-credentials  [default]\n                          (an `aws` source only)
//                    aws_access_key_id=ID\n
//                    aws_secret_access_key=SECRET\n
//                    aws_session_token=TOKEN\n            (when the source has one)
//   svid-pem         the SVID chain (leaf first) then the PKCS#8 private key, PEM
//                    ("-----BEGIN PRIVATE KEY-----"), for the reading process's own identity
//
// The result is built directly in SecretBytes (the key's base64 too), so the formatted secret
// never passes through an ordinary std::string.
#pragma once

#include "agent/creds/binding_index.h"
#include "agent/creds/grant.h"
#include "common/result.h"
#include "common/secret_bytes.h"

namespace sigil::agent::creds {

// FailedPrecondition when the grant does not suit the format (aws-credentials from a static
// source, svid-pem without an SVID) or the secret cannot be written in it (a line break in an
// env value).
Result<SecretBytes> RenderFile(const FileDelivery& file, const CredentialGrantHandle& grant);

}  // namespace sigil::agent::creds
