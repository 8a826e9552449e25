#include "common/ossl.h"

#include <openssl/err.h>

#include <string>

namespace sigil {

Error OsslError(std::string_view what, ErrorCode code) {
  std::string msg(what);
  bool first = true;
  // Keep at most a few reasons: the queue can be long and the first entries carry the cause.
  for (int i = 0; i < 4; ++i) {
    unsigned long e = ERR_get_error();
    if (e == 0) break;
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    msg += first ? " (" : "; ";
    msg += buf;
    first = false;
  }
  if (!first) msg += ")";
  ERR_clear_error();
  return Error(code, std::move(msg));
}

void ClearOsslErrors() { ERR_clear_error(); }

}  // namespace sigil
