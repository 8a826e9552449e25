// `sigil credential rotate SOURCE --from-file F | --from-stdin`: replaces a CredentialSource's
// secret through the admin API (POST .../credentialsources/SOURCE/rotate). The secret is read
// into SecretBytes and sent once; it is never printed.
#include <openssl/crypto.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <iostream>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "cli/admin_client.h"
#include "cli/commands.h"
#include "common/file_util.h"

namespace sigil::cli {

namespace {

// The server's bound (kMaxCredentialSecretBytes) plus a trailing CR LF, which is dropped.
constexpr size_t kMaxSecret = size_t{64} * 1024;
constexpr size_t kMaxInput = kMaxSecret + 2;

Result<SecretBytes> ReadStdin() {
  SecretBytes buf(kMaxInput + 1);  // one more byte tells "too long" from "exactly the limit"
  size_t done = 0;
  while (done < buf.size()) {
    ssize_t n = ::read(STDIN_FILENO, buf.data() + done, buf.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return Internal(std::string("reading stdin: ") + std::strerror(errno));
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  if (done > kMaxInput) {
    return ResourceExhausted("stdin: longer than " + std::to_string(kMaxSecret) + " bytes");
  }
  buf.Truncate(done);
  return buf;
}

// A file or a pipe usually ends with one newline that is not part of the secret (a header
// value cannot hold it anyway): drop one "\n" or "\r\n", nothing else.
void DropTrailingNewline(SecretBytes& s) {
  std::string_view v = s.view();
  if (v.ends_with("\r\n")) {
    s.Truncate(s.size() - 2);
  } else if (v.ends_with("\n")) {
    s.Truncate(s.size() - 1);
  }
}

int Rotate(std::span<const std::string> args) {
  AdminEndpoint ep;
  std::string file;
  bool from_stdin = false;
  std::vector<std::string> pos;
  FlagSet flags(
      "credential rotate SOURCE (--from-file FILE | --from-stdin) [--server URL] "
      "[--credentials DIR]",
      "Replace the secret of CredentialSource SOURCE (static: value; "
      "oauth2-client-credentials: clientSecret). The source gets a new resource version, so "
      "agents drop grants of the old secret at their next Sync; a cached OAuth2 access token "
      "is dropped. One trailing newline of the input is not part of the secret. Audited as "
      "credential.rotated.");
  flags.String("from-file", &file, "read the new secret from this file (at most 64 KiB)");
  flags.Bool("from-stdin", &from_stdin, "read the new secret from standard input");
  flags.Positional("SOURCE", &pos, "the CredentialSource to rotate");
  ep.AddFlags(flags);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  auto usage = [&](const std::string& message) {
    std::cerr << "sigil credential rotate: " << message << "\n\n" << flags.Help();
    return kExitUsage;
  };
  if (pos.size() != 1) return usage("takes exactly one SOURCE");
  const std::string& source = pos[0];
  // Resource names are DNS labels; anything else would not even form the request path.
  const bool name_ok = !source.empty() && source.size() <= 63 &&
                       std::all_of(source.begin(), source.end(), [](char c) {
                         return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-';
                       });
  if (!name_ok) return usage("\"" + source + "\" is not a CredentialSource name");
  if (file.empty() == !from_stdin) return usage("give exactly one of --from-file or --from-stdin");

  if (from_stdin && ::isatty(STDIN_FILENO)) {
    std::cerr << "reading the new secret for " << source << " from stdin (end with Ctrl-D)\n";
  }
  auto secret = from_stdin ? ReadStdin() : ReadSecretFile(file, kMaxInput);
  if (!secret.ok()) {
    std::cerr << "sigil credential rotate " << source << ": " << secret.error().message() << "\n";
    return kExitFailure;
  }
  DropTrailingNewline(*secret);
  if (secret->empty()) {
    std::cerr << "sigil credential rotate " << source << ": the new secret is empty\n";
    return kExitFailure;
  }

  nlohmann::json body = {{"secret", std::string(secret->view())}};
  std::string text = body.dump();
  OPENSSL_cleanse(body["secret"].get_ref<std::string&>().data(),
                  body["secret"].get_ref<std::string&>().size());
  const std::string cmd = "credential rotate " + source;
  auto j = AdminCall(cmd, ep, "POST",
                     "/apis/sigil.dev/v1alpha1/credentialsources/" + source + "/rotate", text);
  OPENSSL_cleanse(text.data(), text.size());
  if (!j) return kExitFailure;
  std::cout << "CredentialSource/" << j->value("source", source) << " rotated ("
            << j->value("field", "") << ", resourceVersion " << j->value("resourceVersion", "")
            << ")";
  if (j->value("cachedTokenDropped", false)) std::cout << "; cached access token dropped";
  std::cout << "\n";
  return kExitOk;
}

}  // namespace

int RunCredential(std::span<const std::string> args) {
  if (args.empty() || args[0] == "-h" || args[0] == "--help") {
    (args.empty() ? std::cerr : std::cout)
        << "Usage: sigil credential rotate SOURCE (--from-file FILE | --from-stdin)\n\n"
           "Run 'sigil credential rotate --help' for details.\n";
    return args.empty() ? kExitUsage : kExitOk;
  }
  if (args[0] != "rotate") {
    std::cerr << "sigil credential: unknown subcommand \"" << args[0] << "\" (try rotate)\n";
    return kExitUsage;
  }
  return Rotate(args.subspan(1));
}

}  // namespace sigil::cli
