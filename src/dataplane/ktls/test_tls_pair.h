// Test support shared by the host unit tests and the VM guest program: a throwaway P-256
// certificate, TLS 1.3 contexts and a handshaken OpenSSL client/server pair over loopback TCP.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "common/ossl.h"
#include "common/owned_fd.h"
#include "common/result.h"

namespace sigil::dataplane::ktls::testing {

struct PairOptions {
  std::string ciphersuite = "TLS_AES_128_GCM_SHA256";
  int num_tickets = 2;      // server's NewSessionTickets (OpenSSL's default is 2)
  bool prepare = true;      // PrepareContextForKtls on both contexts
  bool tls12 = false;       // negotiate TLS 1.2 instead (to test the refusal)
  int io_timeout_sec = 60;  // SO_RCVTIMEO / SO_SNDTIMEO on both sockets
};

struct Endpoint {
  OwnedFd fd;
  SslPtr ssl;
};

struct TlsPair {
  SslCtxPtr server_ctx;
  SslCtxPtr client_ctx;
  Endpoint server;
  Endpoint client;
};

// Connects over 127.0.0.1 and completes SSL_accept (in a thread) and SSL_connect.
Result<TlsPair> MakeTlsPair(const PairOptions& options);

// Blocking helpers on raw sockets (EINTR-safe; fail on EOF or timeout).
Result<void> SendAll(int fd, std::span<const uint8_t> data);
Result<void> RecvExact(int fd, std::span<uint8_t> out);
// Through OpenSSL.
Result<void> SslWriteAll(SSL* ssl, std::span<const uint8_t> data);
Result<void> SslReadExact(SSL* ssl, std::span<uint8_t> out);

}  // namespace sigil::dataplane::ktls::testing
