// EventReporter: delivery in batches, retry while the server is away, drop-oldest bound, and
// no retry of a batch the server refused as malformed. The send function stands in for the
// gRPC call (the real call is exercised by tests/dataplane/test_dataplane.py).
#include "agent/core/event_reporter.h"

#include <gtest/gtest.h>

#include <atomic>
#include <sstream>
#include <thread>

namespace sigil::agent {
namespace {

namespace pb = sigil::agent::v1;

pb::AgentEvent Event(int i) {
  pb::AgentEvent e;
  e.set_type("dataplane.denied");
  e.set_pid(i);
  return e;
}

template <typename Pred>
bool WaitFor(Pred pred) {
  for (int i = 0; i < 300 && !pred(); ++i)
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  return pred();
}

TEST(EventReporter, DeliversInBatchesAndRetriesWhileTheServerIsAway) {
  std::ostringstream out;
  Logger log(out, LogFormat::kText);
  std::atomic<bool> up{false};
  std::mutex mu;
  std::vector<int64_t> got;
  std::atomic<int> calls{0};
  EventReporter r(
      [&](const pb::ReportEventsRequest& req) -> Result<void> {
        ++calls;
        if (!up) return Unavailable("server away");
        std::lock_guard lock(mu);
        for (const auto& e : req.events()) got.push_back(e.pid());
        return {};
      },
      log, {.max_queued = 1000, .max_batch = 7, .interval = std::chrono::milliseconds(10)});
  for (int i = 0; i < 20; ++i) r.Report(Event(i));
  ASSERT_TRUE(WaitFor([&] { return calls >= 3; }));
  EXPECT_EQ(r.sent(), 0u);
  up = true;
  ASSERT_TRUE(WaitFor([&] { return r.sent() == 20; }));
  std::lock_guard lock(mu);
  ASSERT_EQ(got.size(), 20u);
  for (int i = 0; i < 20; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], i);  // in order, once
  EXPECT_EQ(r.dropped(), 0u);
}

TEST(EventReporter, BoundedQueueDropsTheOldest) {
  std::ostringstream out;
  Logger log(out, LogFormat::kText);
  std::atomic<bool> up{false};
  std::vector<int64_t> got;
  EventReporter r(
      [&](const pb::ReportEventsRequest& req) -> Result<void> {
        if (!up) return Unavailable("away");
        for (const auto& e : req.events()) got.push_back(e.pid());
        return {};
      },
      log, {.max_queued = 5, .max_batch = 100, .interval = std::chrono::milliseconds(10)});
  for (int i = 0; i < 12; ++i) r.Report(Event(i));
  EXPECT_EQ(r.dropped(), 7u);
  up = true;
  ASSERT_TRUE(WaitFor([&] { return r.sent() == 5; }));
  r.Stop();
  EXPECT_EQ(got, (std::vector<int64_t>{7, 8, 9, 10, 11}));
}

TEST(EventReporter, MalformedBatchIsDroppedAndLogged) {
  std::ostringstream out;
  Logger log(out, LogFormat::kText);
  std::atomic<int> calls{0};
  EventReporter r(
      [&](const pb::ReportEventsRequest&) -> Result<void> {
        ++calls;
        return InvalidArgument("events[0].type: not allowed");
      },
      log, {.max_queued = 10, .max_batch = 10, .interval = std::chrono::milliseconds(10)});
  r.Report(Event(1));
  ASSERT_TRUE(WaitFor([&] { return r.dropped() == 1; }));
  std::this_thread::sleep_for(std::chrono::milliseconds(100));
  EXPECT_EQ(calls, 1);  // not retried
  r.Stop();
  EXPECT_NE(out.str().find("audit.report.refused"), std::string::npos);
}

// A steady stream against a server that takes a while per call: every call carries `send_at`
// events, and only the remainder waits for the interval. (Sending whatever arrived during the
// previous call made the server commit a small batch per round trip, without end.)
TEST(EventReporter, SteadyStreamGoesInWholeBatchesAndTheRemainderAfterTheInterval) {
  std::ostringstream out;
  Logger log(out, LogFormat::kText);
  std::mutex mu;
  std::vector<int> sizes;
  std::vector<int64_t> got;
  EventReporter r(
      [&](const pb::ReportEventsRequest& req) -> Result<void> {
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
        std::lock_guard lock(mu);
        sizes.push_back(req.events_size());
        for (const auto& e : req.events()) got.push_back(e.pid());
        return {};
      },
      log,
      {.max_queued = 1000,
       .max_batch = 10,
       .send_at = 10,
       .interval = std::chrono::milliseconds(2000)});
  const auto start = std::chrono::steady_clock::now();
  for (int i = 0; i < 95; ++i) {
    r.Report(Event(i));
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  ASSERT_TRUE(WaitFor([&] { return r.sent() == 90; }));
  {
    std::lock_guard lock(mu);
    EXPECT_EQ(sizes, std::vector<int>(9, 10));
  }
  ASSERT_TRUE(WaitFor([&] { return r.sent() == 95; }));
  EXPECT_GE(std::chrono::steady_clock::now() - start, std::chrono::milliseconds(2000));
  std::lock_guard lock(mu);
  ASSERT_EQ(sizes.size(), 10u);
  EXPECT_EQ(sizes.back(), 5);
  ASSERT_EQ(got.size(), 95u);
  for (int i = 0; i < 95; ++i) EXPECT_EQ(got[static_cast<size_t>(i)], i);
}

pb::AgentEvent BigEvent(int i, size_t details_bytes) {
  pb::AgentEvent e = Event(i);
  e.set_details_json("{\"x\":\"" + std::string(details_bytes, 'x') + "\"}");
  return e;
}

// Large events (a connection's batch of injected requests is several KiB) count by size: a
// report stays under max_batch_bytes, and the queue under max_queued_bytes.
TEST(EventReporter, ReportsAndTheQueueAreBoundedInBytes) {
  std::ostringstream out;
  Logger log(out, LogFormat::kText);
  std::atomic<bool> up{false};
  std::mutex mu;
  std::vector<size_t> report_bytes;
  std::vector<int64_t> got;
  const size_t one = EventReporter::EventBytes(BigEvent(0, 1000));
  EventReporter r(
      [&](const pb::ReportEventsRequest& req) -> Result<void> {
        if (!up) return Unavailable("away");
        std::lock_guard lock(mu);
        size_t bytes = 0;
        for (const auto& e : req.events()) {
          bytes += EventReporter::EventBytes(e);
          got.push_back(e.pid());
        }
        report_bytes.push_back(bytes);
        return {};
      },
      log,
      {.max_queued = 1000,
       .max_queued_bytes = 10 * one,
       .max_batch = 100,
       .max_batch_bytes = 3 * one,
       .interval = std::chrono::milliseconds(10)});
  for (int i = 0; i < 14; ++i) r.Report(BigEvent(i, 1000));
  // The oldest four: 14 events, room for 10. A batch the sender took out while the events came
  // in is outside the bounds until its failed send puts it back, and the bounds drop from it
  // then: wait for that before the server comes back, or the batch would be sent.
  ASSERT_TRUE(WaitFor([&] { return r.dropped() == 4u; })) << r.dropped();
  up = true;
  ASSERT_TRUE(WaitFor([&] { return r.sent() == 10; })) << r.sent();
  r.Stop();
  EXPECT_EQ(r.dropped(), 4u);
  std::lock_guard lock(mu);
  EXPECT_EQ(got, (std::vector<int64_t>{4, 5, 6, 7, 8, 9, 10, 11, 12, 13}));
  for (size_t b : report_bytes) EXPECT_LE(b, 3 * one);
  EXPECT_EQ(report_bytes.size(), 4u);  // 3 + 3 + 3 + 1
}

// send_at_bytes makes a report go before the interval, with fewer than send_at events.
TEST(EventReporter, ReportGoesOnceEnoughBytesWait) {
  std::ostringstream out;
  Logger log(out, LogFormat::kText);
  std::atomic<int> calls{0};
  std::atomic<int> events{0};
  EventReporter r(
      [&](const pb::ReportEventsRequest& req) -> Result<void> {
        ++calls;
        events += req.events_size();
        return {};
      },
      log,
      {.max_queued = 1000,
       .max_batch = 100,
       .send_at = 50,
       .send_at_bytes = 4000,
       .interval = std::chrono::milliseconds(60000)});
  r.Report(BigEvent(1, 1500));
  r.Report(BigEvent(2, 1500));
  std::this_thread::sleep_for(std::chrono::milliseconds(200));
  EXPECT_EQ(calls, 0);  // 2 events, ~3 KB: below both thresholds, and the interval is long
  r.Report(BigEvent(3, 1500));
  ASSERT_TRUE(WaitFor([&] { return events == 3; }));
  EXPECT_EQ(calls, 1);
}

}  // namespace
}  // namespace sigil::agent
