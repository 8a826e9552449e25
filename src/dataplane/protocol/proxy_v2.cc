#include "dataplane/protocol/proxy_v2.h"

namespace sigil::dataplane {

std::string EncodeProxyV2(const Destination& source, const Destination& destination,
                          std::string_view spiffe_id) {
  static constexpr char kSignature[12] = {'\r', '\n', '\r', '\n', '\0', '\r',
                                          '\n', 'Q',  'U',  'I',  'T',  '\n'};
  const bool v6 = source.family == AF_INET6;
  const size_t ip_len = v6 ? 16 : 4;
  spiffe_id = spiffe_id.substr(0, 2048);
  const size_t addr_len = 2 * ip_len + 4;
  const size_t length = addr_len + 3 + spiffe_id.size();
  std::string out(kSignature, sizeof kSignature);
  out.push_back(static_cast<char>(0x21));              // version 2, PROXY command
  out.push_back(static_cast<char>(v6 ? 0x21 : 0x11));  // TCP over IPv6 / IPv4
  out.push_back(static_cast<char>(length >> 8));
  out.push_back(static_cast<char>(length & 0xff));
  out.append(reinterpret_cast<const char*>(source.ip.data()), ip_len);
  out.append(reinterpret_cast<const char*>(destination.ip.data()), ip_len);
  for (uint16_t port : {source.port, destination.port}) {
    out.push_back(static_cast<char>(port >> 8));
    out.push_back(static_cast<char>(port & 0xff));
  }
  out.push_back(static_cast<char>(kSpiffeIdTlv));
  out.push_back(static_cast<char>(spiffe_id.size() >> 8));
  out.push_back(static_cast<char>(spiffe_id.size() & 0xff));
  out.append(spiffe_id);
  return out;
}

}  // namespace sigil::dataplane
