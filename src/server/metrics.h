// A small thread-safe metrics registry rendered in the Prometheus text exposition format
// (version 0.0.4): counters and gauges with label sets, gauges read at scrape time, and
// histograms with fixed buckets. Served by `sigil server --metrics-listen` (metrics_http.h).
//
// Metric and label names are checked when registered (programming errors throw
// std::invalid_argument); label values are escaped when rendered. Metric objects live as long
// as the Registry and are safe to update from any thread.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <vector>

namespace sigil::server::metrics {

using LabelValues = std::vector<std::string>;

// Escapes a label value: backslash, double quote and newline.
std::string EscapeLabelValue(std::string_view v);
// Escapes HELP text: backslash and newline.
std::string EscapeHelp(std::string_view v);
// Formats a sample value: integers without exponent, "+Inf", "-Inf", "NaN".
std::string FormatValue(double v);

class Metric {
 public:
  Metric(std::string name, std::string help, std::vector<std::string> label_names);
  virtual ~Metric() = default;
  Metric(const Metric&) = delete;
  Metric& operator=(const Metric&) = delete;
  const std::string& name() const { return name_; }
  // "# HELP", "# TYPE" and the samples.
  void Render(std::string& out) const;

 protected:
  virtual std::string_view type() const = 0;
  virtual void RenderSamples(std::string& out) const = 0;
  // `name{l1="v1",...,extra}` (no braces when there are no labels).
  std::string SampleName(std::string_view suffix, const LabelValues& values,
                         std::string_view extra_label = {}) const;
  void CheckArity(const LabelValues& values) const;

  const std::string name_;
  const std::string help_;
  const std::vector<std::string> label_names_;
  mutable std::mutex mu_;
};

class Counter final : public Metric {
 public:
  using Metric::Metric;
  // `delta` must be >= 0 (negative deltas are ignored). `values` matches the label names.
  void Inc(const LabelValues& values = {}, double delta = 1);
  double Value(const LabelValues& values = {}) const;

 private:
  std::string_view type() const override { return "counter"; }
  void RenderSamples(std::string& out) const override;
  std::map<LabelValues, double> values_;
};

class Gauge final : public Metric {
 public:
  using Metric::Metric;
  void Set(const LabelValues& values, double v);
  void Set(double v) { Set({}, v); }
  double Value(const LabelValues& values = {}) const;

 private:
  std::string_view type() const override { return "gauge"; }
  void RenderSamples(std::string& out) const override;
  std::map<LabelValues, double> values_;
};

// A label-less gauge whose value is read by `fn` at scrape time (must be thread-safe; an
// exception from it skips the sample).
class CallbackGauge final : public Metric {
 public:
  CallbackGauge(std::string name, std::string help, std::function<double()> fn);

 private:
  std::string_view type() const override { return "gauge"; }
  void RenderSamples(std::string& out) const override;
  std::function<double()> fn_;
};

// A label-less counter whose value is read by `fn` at scrape time, for totals kept elsewhere
// (must be thread-safe and never decrease; an exception from it skips the sample).
class CallbackCounter final : public Metric {
 public:
  CallbackCounter(std::string name, std::string help, std::function<double()> fn);

 private:
  std::string_view type() const override { return "counter"; }
  void RenderSamples(std::string& out) const override;
  std::function<double()> fn_;
};

class Histogram final : public Metric {
 public:
  // `buckets`: upper bounds, strictly increasing and finite; "+Inf" is implicit.
  Histogram(std::string name, std::string help, std::vector<std::string> label_names,
            std::vector<double> buckets);
  void Observe(double v, const LabelValues& values = {});
  uint64_t Count(const LabelValues& values = {}) const;
  double Sum(const LabelValues& values = {}) const;

 private:
  struct Series {
    std::vector<uint64_t> counts;  // per bucket, not cumulative; last is +Inf
    double sum = 0;
    uint64_t count = 0;
  };
  std::string_view type() const override { return "histogram"; }
  void RenderSamples(std::string& out) const override;
  const std::vector<double> buckets_;
  std::map<LabelValues, Series> series_;
};

class Registry {
 public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  // Registering a name twice throws std::invalid_argument.
  Counter& AddCounter(std::string name, std::string help,
                      std::vector<std::string> label_names = {});
  Gauge& AddGauge(std::string name, std::string help, std::vector<std::string> label_names = {});
  CallbackGauge& AddCallbackGauge(std::string name, std::string help, std::function<double()> fn);
  CallbackCounter& AddCallbackCounter(std::string name, std::string help,
                                      std::function<double()> fn);
  Histogram& AddHistogram(std::string name, std::string help, std::vector<double> buckets,
                          std::vector<std::string> label_names = {});

  // The whole registry in text format 0.0.4, metrics in registration order.
  std::string Render() const;

 private:
  template <typename M>
  M& Add(std::unique_ptr<M> metric);
  mutable std::mutex mu_;
  std::vector<std::unique_ptr<Metric>> metrics_;
};

// Content-Type of Registry::Render() output.
inline constexpr std::string_view kContentType = "text/plain; version=0.0.4; charset=utf-8";

// The server's metrics, registered in one place so names and help stay consistent.
struct ServerMetrics {
  explicit ServerMetrics(Registry& registry);
  Counter& admin_requests;        // sigil_admin_requests_total{method,code}
  Counter& svid_issued;           // sigil_svid_issued_total
  Histogram& svid_issue_seconds;  // sigil_svid_issue_seconds
  Gauge& agents_connected;        // sigil_agents_connected
  // sigil_store_queries_total: store::QueriesExecuted() (statements sent to the database by
  // this process), read at scrape time.
  CallbackCounter& store_queries;
};

// Fixed buckets of sigil_svid_issue_seconds (seconds).
inline const std::vector<double>& SvidIssueBuckets() {
  static const std::vector<double> b = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                        0.05,   0.1,   0.25,   0.5,   1,    2.5};
  return b;
}

}  // namespace sigil::server::metrics
