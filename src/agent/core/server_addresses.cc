#include "agent/core/server_addresses.h"

#include <algorithm>

#include "common/host_port.h"

namespace sigil::agent {
namespace {

constexpr size_t kMaxAddressLength = 1024;

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

Result<void> CheckEntry(const std::string& label, std::string_view entry) {
  if (entry.empty()) return InvalidArgument(label + ": empty (want HOST:PORT)");
  if (entry.size() > kMaxAddressLength) {
    return InvalidArgument(label + ": longer than " + std::to_string(kMaxAddressLength) + " bytes");
  }
  for (unsigned char c : entry) {
    if (c <= 0x20 || c >= 0x7f) {
      // Not echoed: the entry may hold control characters.
      return InvalidArgument(label + ": contains a space, control or non-ASCII character");
    }
  }
  SIGIL_ASSIGN_OR_RETURN(auto hp, SplitHostPort(label, entry));
  if (hp.second == 0) return InvalidArgument(label + ": \"" + std::string(entry) + "\" has port 0");
  if (hp.first.empty() || hp.first == "[]") {
    return InvalidArgument(label + ": \"" + std::string(entry) + "\" has no host");
  }
  const bool bracketed = entry.front() == '[';
  if (!bracketed && hp.first.find(':') != std::string::npos) {
    return InvalidArgument(label + ": \"" + std::string(entry) +
                           "\": write an IPv6 address in brackets, [ADDR]:PORT");
  }
  if (hp.first.find_first_of("[]") != std::string::npos) {
    return InvalidArgument(label + ": \"" + std::string(entry) + "\" has a misplaced bracket");
  }
  return Ok();
}

std::string Label(std::string_view what, size_t index, size_t count) {
  std::string label(what);
  if (count > 1) label += " entry " + std::to_string(index + 1);
  return label;
}

}  // namespace

Result<std::vector<std::string>> ParseServerAddresses(std::string_view what,
                                                      std::string_view text) {
  std::vector<std::string_view> parts;
  size_t start = 0;
  while (true) {
    const size_t comma = text.find(',', start);
    parts.push_back(
        Trim(text.substr(start, comma == std::string_view::npos ? text.npos : comma - start)));
    if (comma == std::string_view::npos) break;
    start = comma + 1;
    if (parts.size() > kMaxServerAddresses) break;
  }
  if (parts.size() > kMaxServerAddresses) {
    return InvalidArgument(std::string(what) + ": more than " +
                           std::to_string(kMaxServerAddresses) + " addresses");
  }
  std::vector<std::string> out(parts.begin(), parts.end());
  SIGIL_TRY(ValidateServerAddresses(what, out));
  return out;
}

Result<void> ValidateServerAddresses(std::string_view what,
                                     const std::vector<std::string>& addresses) {
  if (addresses.empty()) return InvalidArgument(std::string(what) + ": no server address");
  if (addresses.size() > kMaxServerAddresses) {
    return InvalidArgument(std::string(what) + ": more than " +
                           std::to_string(kMaxServerAddresses) + " addresses");
  }
  for (size_t i = 0; i < addresses.size(); ++i) {
    const std::string label = Label(what, i, addresses.size());
    SIGIL_TRY(CheckEntry(label, addresses[i]));
    if (std::find(addresses.begin(), addresses.begin() + static_cast<std::ptrdiff_t>(i),
                  addresses[i]) != addresses.begin() + static_cast<std::ptrdiff_t>(i)) {
      return InvalidArgument(label + ": \"" + addresses[i] + "\" is listed twice");
    }
  }
  return Ok();
}

std::string JoinServerAddresses(const std::vector<std::string>& addresses) {
  std::string out;
  for (const auto& a : addresses) {
    if (!out.empty()) out += ',';
    out += a;
  }
  return out;
}

ServerAddresses::ServerAddresses(std::vector<std::string> addresses, size_t start)
    : addresses_(std::move(addresses)),
      index_(addresses_.empty() ? 0 : start % addresses_.size()) {}

ServerAddresses::Selection ServerAddresses::Current() const {
  std::lock_guard lock(mu_);
  return {addresses_.empty() ? std::string() : addresses_[index_], epoch_};
}

uint64_t ServerAddresses::epoch() const {
  std::lock_guard lock(mu_);
  return epoch_;
}

std::optional<ServerAddresses::Move> ServerAddresses::Advance(uint64_t failed_epoch) {
  std::lock_guard lock(mu_);
  if (failed_epoch != epoch_ || addresses_.size() < 2) return std::nullopt;
  Move m;
  m.from = addresses_[index_];
  index_ = (index_ + 1) % addresses_.size();
  m.to = addresses_[index_];
  m.epoch = ++epoch_;
  ++moves_since_success_;
  ++failovers_;
  return m;
}

void ServerAddresses::Succeeded() {
  std::lock_guard lock(mu_);
  moves_since_success_ = 0;
}

bool ServerAddresses::RoundComplete() const {
  std::lock_guard lock(mu_);
  return addresses_.size() < 2 || moves_since_success_ >= addresses_.size();
}

uint64_t ServerAddresses::failovers() const {
  std::lock_guard lock(mu_);
  return failovers_;
}

}  // namespace sigil::agent
