#include "common/thread_util.h"

#include <gtest/gtest.h>
#include <pthread.h>
#include <sys/resource.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <thread>

namespace sigil {
namespace {

TEST(ConfigureThisThread, NamesTheThreadAndLowersOnlyItsPriority) {
  const int process_nice = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));
  char name[16] = {};
  int nice_there = 0;
  std::thread t([&] {
    ConfigureThisThread("sigil-test-bg", 5);
    pthread_getname_np(pthread_self(), name, sizeof name);
    errno = 0;
    nice_there = getpriority(PRIO_PROCESS, static_cast<id_t>(gettid()));
    ASSERT_EQ(errno, 0);
  });
  t.join();
  EXPECT_STREQ(name, "sigil-test-bg");
  EXPECT_EQ(nice_there, std::min(process_nice + 5, 19));
  // The calling thread (the test's) is unchanged.
  EXPECT_EQ(getpriority(PRIO_PROCESS, static_cast<id_t>(gettid())), process_nice);
}

}  // namespace
}  // namespace sigil
