#include "common/ossl.h"

#include <openssl/err.h>

#include <string>

namespace sigil {

std::string DrainOsslErrors() {
  std::string out;
  // Keep at most a few reasons: the queue can be long and the first entries carry the cause.
  for (int i = 0; i < 4; ++i) {
    unsigned long e = ERR_get_error();
    if (e == 0) break;
    char buf[256];
    ERR_error_string_n(e, buf, sizeof(buf));
    if (!out.empty()) out += "; ";
    out += buf;
  }
  ERR_clear_error();
  return out;
}

Error OsslError(std::string_view what, ErrorCode code) {
  std::string msg(what);
  const std::string reasons = DrainOsslErrors();
  if (!reasons.empty()) msg += " (" + reasons + ")";
  return Error(code, std::move(msg));
}

void ClearOsslErrors() {
  // ERR_clear_error() resets every slot of the queue, which costs ~2 % of a data-plane event
  // loop when done before each TLS record; the queue is almost always empty already.
  if (ERR_peek_error() != 0) ERR_clear_error();
}

}  // namespace sigil
