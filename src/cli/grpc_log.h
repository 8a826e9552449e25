// gRPC's own log lines for `sigil server` and `sigil agent`, minus one that misleads operators.
//
// Agents identify the server by its SPIFFE ID, not a DNS name, and may dial it by IP address;
// gRPC then sends the IP as the TLS server name and the server's TLS layer logs "No match
// found for server name" at ERROR level although nothing failed. That line is dropped;
// everything else is printed as gRPC would.
#pragma once

namespace sigil::cli {

void InstallGrpcLogFilter();

}  // namespace sigil::cli
