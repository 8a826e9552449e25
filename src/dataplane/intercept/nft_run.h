// Runs the nft(8) command line tool: `nft ARGS...` with `script` on stdin, returning what it
// printed. Used by the nftables interception fallback to load its table atomically
// (`nft -f -`) and to read its counter.
#pragma once

#include <string>
#include <string_view>
#include <vector>

#include "common/result.h"

namespace sigil::dataplane {

// Unavailable with nft's own message (stdout+stderr, at most 4 KiB) if it cannot be started
// or exits non-zero. Stdout is returned, bounded to 256 KiB.
Result<std::string> RunNft(const std::string& nft_binary, const std::vector<std::string>& args,
                           std::string_view script = {});

}  // namespace sigil::dataplane
