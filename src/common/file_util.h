// Bounded file reads and crash-safe writes.
#pragma once

#include <sys/types.h>
#include <string>
#include <string_view>

#include "common/result.h"
#include "common/secret_bytes.h"

namespace sigil {

// Reads a whole regular file; ResourceExhausted if it is larger than `max_bytes`.
Result<std::string> ReadFile(const std::string& path, size_t max_bytes);
// Same, into SecretBytes (for keys and tokens): no copy lingers in a std::string.
Result<SecretBytes> ReadSecretFile(const std::string& path, size_t max_bytes);

enum class Overwrite { kAllow, kRefuse };

// Writes `data` to a temporary file in the same directory with `mode`, fsyncs it, renames it
// over `path` and fsyncs the directory: readers see the old or the new content, never a torn
// file. With Overwrite::kRefuse an existing `path` is AlreadyExists.
Result<void> WriteFileAtomic(const std::string& path, std::string_view data, mode_t mode,
                             Overwrite overwrite = Overwrite::kAllow);

// mkdir -p with `mode` for the directories it creates.
Result<void> MakeDirs(const std::string& path, mode_t mode);

}  // namespace sigil
