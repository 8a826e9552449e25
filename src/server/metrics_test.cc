#include "server/metrics.h"

#include <gtest/gtest.h>

#include <chrono>
#include <limits>
#include <stdexcept>
#include <thread>
#include <vector>

#include "store/query_count.h"
#include "store/sqlite_store.h"

namespace sigil::server::metrics {
namespace {

TEST(MetricsTest, EscapingAndFormatting) {
  EXPECT_EQ(EscapeLabelValue("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
  EXPECT_EQ(EscapeHelp("x\\y\n\"z\""), "x\\\\y\\n\"z\"");
  EXPECT_EQ(FormatValue(3), "3");
  EXPECT_EQ(FormatValue(0.25), "0.25");
  EXPECT_EQ(FormatValue(0.0005), "0.0005");
  EXPECT_EQ(FormatValue(1e-9), "1e-09");
  EXPECT_EQ(FormatValue(-2), "-2");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::infinity()), "+Inf");
  EXPECT_EQ(FormatValue(-std::numeric_limits<double>::infinity()), "-Inf");
  EXPECT_EQ(FormatValue(std::numeric_limits<double>::quiet_NaN()), "NaN");
}

TEST(MetricsTest, CounterWithLabels) {
  Registry r;
  Counter& c = r.AddCounter("req_total", "Requests.\nSecond line \\ here", {"method", "code"});
  c.Inc({"GET", "200"});
  c.Inc({"GET", "200"});
  c.Inc({"POST", "4\"0\n0"}, 3);
  c.Inc({"GET", "200"}, -5);  // ignored
  EXPECT_EQ(c.Value({"GET", "200"}), 2);
  EXPECT_EQ(c.Value({"PUT", "200"}), 0);
  EXPECT_THROW(c.Inc({"GET"}), std::invalid_argument);
  EXPECT_EQ(r.Render(),
            "# HELP req_total Requests.\\nSecond line \\\\ here\n"
            "# TYPE req_total counter\n"
            "req_total{method=\"GET\",code=\"200\"} 2\n"
            "req_total{method=\"POST\",code=\"4\\\"0\\n0\"} 3\n");
}

TEST(MetricsTest, UnlabelledDefaultsToZeroAndGauges) {
  Registry r;
  r.AddCounter("c_total", "C.");
  Gauge& g = r.AddGauge("g", "G.");
  r.AddCallbackGauge("cb", "CB.", [] { return 42.0; });
  r.AddCallbackGauge("bad", "Throws.", []() -> double { throw std::runtime_error("x"); });
  g.Set(7.5);
  EXPECT_EQ(r.Render(),
            "# HELP c_total C.\n# TYPE c_total counter\nc_total 0\n"
            "# HELP g G.\n# TYPE g gauge\ng 7.5\n"
            "# HELP cb CB.\n# TYPE cb gauge\ncb 42\n"
            "# HELP bad Throws.\n# TYPE bad gauge\n");
}

TEST(MetricsTest, Histogram) {
  Registry r;
  Histogram& h = r.AddHistogram("lat_seconds", "Latency.", {0.1, 1});
  h.Observe(0.05);
  h.Observe(0.1);  // le is inclusive
  h.Observe(0.5);
  h.Observe(9);
  EXPECT_EQ(h.Count(), 4u);
  EXPECT_DOUBLE_EQ(h.Sum(), 9.65);
  std::string text = r.Render();
  EXPECT_NE(text.find("# TYPE lat_seconds histogram\n"), std::string::npos);
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"0.1\"} 2\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"1\"} 3\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_bucket{le=\"+Inf\"} 4\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_sum 9.65\n"), std::string::npos) << text;
  EXPECT_NE(text.find("lat_seconds_count 4\n"), std::string::npos) << text;

  Registry empty;
  empty.AddHistogram("h", "H.", {1});
  EXPECT_EQ(empty.Render(),
            "# HELP h H.\n# TYPE h histogram\nh_bucket{le=\"1\"} 0\nh_bucket{le=\"+Inf\"} 0\n"
            "h_sum 0\nh_count 0\n");
  EXPECT_THROW(empty.AddHistogram("h2", "H.", {1, 1}), std::invalid_argument);
}

TEST(MetricsTest, NamesAreChecked) {
  Registry r;
  r.AddCounter("ok:name_total", "x");
  EXPECT_THROW(r.AddCounter("ok:name_total", "dup"), std::invalid_argument);
  EXPECT_THROW(r.AddCounter("1bad", "x"), std::invalid_argument);
  EXPECT_THROW(r.AddCounter("bad-name", "x"), std::invalid_argument);
  EXPECT_THROW(r.AddCounter("x_total", "x", {"le"}), std::invalid_argument);
  EXPECT_THROW(r.AddCounter("y_total", "x", {"__reserved"}), std::invalid_argument);
}

TEST(MetricsTest, ConcurrentUpdates) {
  Registry r;
  ServerMetrics m(r);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&] {
      for (int i = 0; i < 1000; ++i) {
        m.admin_requests.Inc({"GET", "200"});
        m.svid_issued.Inc();
        m.svid_issue_seconds.Observe(0.002);
        if (i % 100 == 0) (void)r.Render();
      }
    });
  }
  for (auto& t : threads) t.join();
  EXPECT_EQ(m.admin_requests.Value({"GET", "200"}), 8000);
  EXPECT_EQ(m.svid_issued.Value(), 8000);
  EXPECT_EQ(m.svid_issue_seconds.Count(), 8000u);
  std::string text = r.Render();
  EXPECT_NE(text.find("sigil_admin_requests_total{method=\"GET\",code=\"200\"} 8000\n"),
            std::string::npos);
  EXPECT_NE(text.find("sigil_svid_issue_seconds_bucket{le=\"0.0025\"} 8000\n"), std::string::npos)
      << text;
  EXPECT_NE(text.find("sigil_agents_connected 0\n"), std::string::npos);
  EXPECT_NE(text.find("sigil_svid_issue_seconds_bucket{le=\"0.0005\"} 0\n"), std::string::npos);
}

TEST(MetricsTest, CallbackCounter) {
  Registry r;
  double v = 5;
  r.AddCallbackCounter("cbc_total", "CBC.", [&v] { return v; });
  r.AddCallbackCounter("bad_total", "Throws.", []() -> double { throw std::runtime_error("x"); });
  v = 6;
  EXPECT_EQ(r.Render(),
            "# HELP cbc_total CBC.\n# TYPE cbc_total counter\ncbc_total 6\n"
            "# HELP bad_total Throws.\n# TYPE bad_total counter\n");
}

// sigil_store_queries_total counts statements of a real SQLite store: one per execution (not
// per row), nothing while the store is not used.
TEST(MetricsTest, StoreQueriesCountsSqliteStatements) {
  Registry r;
  ServerMetrics m(r);
  auto store = store::SqliteStore::Open(":memory:");
  ASSERT_TRUE(store.ok()) << store.error().ToString();
  const uint64_t before = store::QueriesExecuted();
  ASSERT_TRUE((*store)->CurrentRevision().ok());
  const uint64_t one = store::QueriesExecuted() - before;
  EXPECT_GE(one, 1u);
  EXPECT_LE(one, 2u);  // the revision read (and nothing per row)
  const uint64_t idle = store::QueriesExecuted();
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  EXPECT_EQ(store::QueriesExecuted(), idle);
  for (int i = 0; i < 10; ++i) ASSERT_TRUE((*store)->CurrentRevision().ok());
  EXPECT_EQ(store::QueriesExecuted() - idle, 10 * one);
  const std::string text = r.Render();
  EXPECT_NE(text.find("# TYPE sigil_store_queries_total counter\n"), std::string::npos) << text;
  EXPECT_NE(text.find("sigil_store_queries_total " +
                      FormatValue(static_cast<double>(store::QueriesExecuted())) + "\n"),
            std::string::npos)
      << text;
}

}  // namespace
}  // namespace sigil::server::metrics
