// Settings of the calling thread for background work (an audit reporter, an ingest thread).
#pragma once

namespace sigil {

// Names the calling thread (`name`: at most 15 characters, as /proc, top and perf show it) and
// adds `nice` to its nice value (0: unchanged). On Linux setpriority on a thread id changes
// that one thread only; raising the value needs no privilege. Both are best effort: a failure
// leaves the thread as it was.
void ConfigureThisThread(const char* name, int nice);

}  // namespace sigil
