// The HTTP error responses the agent answers in place of the upstream, and the status it uses
// for each kind of parse error.
#pragma once

#include <string>
#include <string_view>

#include "common/result.h"

namespace sigil::dataplane::http {

// 400 for InvalidArgument, 431 for ResourceExhausted (a head or trailer limit), 505 for
// Unimplemented (HTTP version), 500 for anything else (our own bug or a bad injector edit).
int StatusForError(const Error& error);

// "Bad Request", "Forbidden", ... ("Error" for codes without a phrase here).
std::string_view ReasonPhrase(int status);

// A complete response: status line, Content-Type text/plain, Content-Length, Connection: close,
// and a one-line body "sigil: <reason>". `status` outside 400-599 becomes 500. Non-printable
// bytes in `reason` become '?' and it is cut at 200 bytes, so a reason never breaks framing.
std::string BuildErrorResponse(int status, std::string_view reason);

}  // namespace sigil::dataplane::http
