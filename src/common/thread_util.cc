#include "common/thread_util.h"

#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

namespace sigil {

void ConfigureThisThread(const char* name, int nice) {
  (void)pthread_setname_np(pthread_self(), name);
  if (nice != 0) (void)setpriority(PRIO_PROCESS, static_cast<id_t>(gettid()), nice);
}

}  // namespace sigil
