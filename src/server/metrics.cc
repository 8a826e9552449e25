#include "server/metrics.h"

#include <charconv>
#include <cmath>
#include <stdexcept>
#include <utility>

#include "store/query_count.h"

namespace sigil::server::metrics {
namespace {

bool ValidName(std::string_view n, bool allow_colon) {
  if (n.empty()) return false;
  for (size_t i = 0; i < n.size(); ++i) {
    char c = n[i];
    bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' ||
              (allow_colon && c == ':') || (i > 0 && c >= '0' && c <= '9');
    if (!ok) return false;
  }
  return true;
}

}  // namespace

std::string EscapeLabelValue(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '"') {
      out += "\\\"";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string EscapeHelp(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') {
      out += "\\\\";
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
  return out;
}

std::string FormatValue(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  if (v == std::floor(v) && std::fabs(v) < 1e15) {
    return std::to_string(static_cast<int64_t>(v));
  }
  char buf[64];
  // Plain decimals for the usual range ("0.0005", not "5e-04"), shortest round-trip form.
  const double mag = std::fabs(v);
  auto [end, ec] = (mag >= 1e-6 && mag < 1e15)
                       ? std::to_chars(buf, buf + sizeof buf, v, std::chars_format::fixed)
                       : std::to_chars(buf, buf + sizeof buf, v);
  if (ec != std::errc()) return "NaN";
  return std::string(buf, end);
}

Metric::Metric(std::string name, std::string help, std::vector<std::string> label_names)
    : name_(std::move(name)), help_(std::move(help)), label_names_(std::move(label_names)) {
  if (!ValidName(name_, true)) throw std::invalid_argument("bad metric name: " + name_);
  for (const auto& l : label_names_) {
    if (!ValidName(l, false) || l.starts_with("__") || l == "le") {
      throw std::invalid_argument("bad label name for " + name_ + ": " + l);
    }
  }
}

void Metric::Render(std::string& out) const {
  out += "# HELP " + name_ + " " + EscapeHelp(help_) + "\n";
  out += "# TYPE " + name_ + " ";
  out += type();
  out += "\n";
  std::lock_guard lock(mu_);
  RenderSamples(out);
}

std::string Metric::SampleName(std::string_view suffix, const LabelValues& values,
                               std::string_view extra_label) const {
  std::string s = name_;
  s += suffix;
  if (label_names_.empty() && extra_label.empty()) return s;
  s += '{';
  bool first = true;
  for (size_t i = 0; i < label_names_.size() && i < values.size(); ++i) {
    if (!first) s += ',';
    first = false;
    s += label_names_[i] + "=\"" + EscapeLabelValue(values[i]) + "\"";
  }
  if (!extra_label.empty()) {
    if (!first) s += ',';
    s += extra_label;
  }
  s += '}';
  return s;
}

void Metric::CheckArity(const LabelValues& values) const {
  if (values.size() != label_names_.size()) {
    throw std::invalid_argument(name_ + ": expected " + std::to_string(label_names_.size()) +
                                " label values, got " + std::to_string(values.size()));
  }
}

void Counter::Inc(const LabelValues& values, double delta) {
  CheckArity(values);
  if (!(delta >= 0)) return;
  std::lock_guard lock(mu_);
  values_[values] += delta;
}

double Counter::Value(const LabelValues& values) const {
  std::lock_guard lock(mu_);
  auto it = values_.find(values);
  return it == values_.end() ? 0 : it->second;
}

void Counter::RenderSamples(std::string& out) const {
  if (values_.empty() && label_names_.empty()) {
    out += name_ + " 0\n";
    return;
  }
  for (const auto& [labels, v] : values_) {
    out += SampleName("", labels) + " " + FormatValue(v) + "\n";
  }
}

void Gauge::Set(const LabelValues& values, double v) {
  CheckArity(values);
  std::lock_guard lock(mu_);
  values_[values] = v;
}

double Gauge::Value(const LabelValues& values) const {
  std::lock_guard lock(mu_);
  auto it = values_.find(values);
  return it == values_.end() ? 0 : it->second;
}

void Gauge::RenderSamples(std::string& out) const {
  if (values_.empty() && label_names_.empty()) {
    out += name_ + " 0\n";
    return;
  }
  for (const auto& [labels, v] : values_) {
    out += SampleName("", labels) + " " + FormatValue(v) + "\n";
  }
}

CallbackGauge::CallbackGauge(std::string name, std::string help, std::function<double()> fn)
    : Metric(std::move(name), std::move(help), {}), fn_(std::move(fn)) {}

void CallbackGauge::RenderSamples(std::string& out) const {
  try {
    out += name_ + " " + FormatValue(fn_()) + "\n";
  } catch (...) {
    // A failing source skips the sample; the scrape still succeeds.
  }
}

CallbackCounter::CallbackCounter(std::string name, std::string help, std::function<double()> fn)
    : Metric(std::move(name), std::move(help), {}), fn_(std::move(fn)) {}

void CallbackCounter::RenderSamples(std::string& out) const {
  try {
    out += name_ + " " + FormatValue(fn_()) + "\n";
  } catch (...) {
    // As CallbackGauge: a failing source skips the sample.
  }
}

Histogram::Histogram(std::string name, std::string help, std::vector<std::string> label_names,
                     std::vector<double> buckets)
    : Metric(std::move(name), std::move(help), std::move(label_names)),
      buckets_(std::move(buckets)) {
  for (size_t i = 0; i < buckets_.size(); ++i) {
    if (!std::isfinite(buckets_[i]) || (i > 0 && buckets_[i] <= buckets_[i - 1])) {
      throw std::invalid_argument(name_ + ": buckets must be finite and strictly increasing");
    }
  }
}

void Histogram::Observe(double v, const LabelValues& values) {
  CheckArity(values);
  std::lock_guard lock(mu_);
  Series& s = series_[values];
  if (s.counts.empty()) s.counts.assign(buckets_.size() + 1, 0);
  size_t i = 0;
  while (i < buckets_.size() && v > buckets_[i]) ++i;
  ++s.counts[i];
  s.sum += v;
  ++s.count;
}

uint64_t Histogram::Count(const LabelValues& values) const {
  std::lock_guard lock(mu_);
  auto it = series_.find(values);
  return it == series_.end() ? 0 : it->second.count;
}

double Histogram::Sum(const LabelValues& values) const {
  std::lock_guard lock(mu_);
  auto it = series_.find(values);
  return it == series_.end() ? 0 : it->second.sum;
}

void Histogram::RenderSamples(std::string& out) const {
  auto render = [&](const LabelValues& labels, const Series* s) {
    uint64_t cumulative = 0;
    for (size_t i = 0; i <= buckets_.size(); ++i) {
      if (s != nullptr) cumulative += s->counts[i];
      std::string le = "le=\"" + (i < buckets_.size() ? FormatValue(buckets_[i]) : "+Inf") + "\"";
      out += SampleName("_bucket", labels, le) + " " + std::to_string(cumulative) + "\n";
    }
    out += SampleName("_sum", labels) + " " + FormatValue(s ? s->sum : 0) + "\n";
    out += SampleName("_count", labels) + " " + std::to_string(s ? s->count : 0) + "\n";
  };
  if (series_.empty() && label_names_.empty()) {
    render({}, nullptr);
    return;
  }
  for (const auto& [labels, s] : series_) render(labels, &s);
}

template <typename M>
M& Registry::Add(std::unique_ptr<M> metric) {
  std::lock_guard lock(mu_);
  for (const auto& m : metrics_) {
    if (m->name() == metric->name()) {
      throw std::invalid_argument("metric registered twice: " + metric->name());
    }
  }
  M& ref = *metric;
  metrics_.push_back(std::move(metric));
  return ref;
}

Counter& Registry::AddCounter(std::string name, std::string help,
                              std::vector<std::string> label_names) {
  return Add(std::make_unique<Counter>(std::move(name), std::move(help), std::move(label_names)));
}

Gauge& Registry::AddGauge(std::string name, std::string help,
                          std::vector<std::string> label_names) {
  return Add(std::make_unique<Gauge>(std::move(name), std::move(help), std::move(label_names)));
}

CallbackGauge& Registry::AddCallbackGauge(std::string name, std::string help,
                                          std::function<double()> fn) {
  return Add(std::make_unique<CallbackGauge>(std::move(name), std::move(help), std::move(fn)));
}

CallbackCounter& Registry::AddCallbackCounter(std::string name, std::string help,
                                              std::function<double()> fn) {
  return Add(std::make_unique<CallbackCounter>(std::move(name), std::move(help), std::move(fn)));
}

Histogram& Registry::AddHistogram(std::string name, std::string help, std::vector<double> buckets,
                                  std::vector<std::string> label_names) {
  return Add(std::make_unique<Histogram>(std::move(name), std::move(help), std::move(label_names),
                                         std::move(buckets)));
}

std::string Registry::Render() const {
  std::lock_guard lock(mu_);
  std::string out;
  for (const auto& m : metrics_) m->Render(out);
  return out;
}

ServerMetrics::ServerMetrics(Registry& r)
    : admin_requests(r.AddCounter("sigil_admin_requests_total",
                                  "Admin API requests by HTTP method and status code.",
                                  {"method", "code"})),
      svid_issued(r.AddCounter("sigil_svid_issued_total", "X.509 SVIDs issued.")),
      svid_issue_seconds(r.AddHistogram("sigil_svid_issue_seconds",
                                        "Time to issue one X.509 SVID, in seconds.",
                                        SvidIssueBuckets())),
      agents_connected(r.AddGauge("sigil_agents_connected",
                                  "Agents with an open Sync stream (placeholder: 0 until the "
                                  "agent API reports it).")),
      store_queries(r.AddCallbackCounter(
          "sigil_store_queries_total",
          "Statements this process sent to the store's database (SQLite statements started, "
          "transaction control included; PostgreSQL queries).",
          [] { return static_cast<double>(store::QueriesExecuted()); })) {}

}  // namespace sigil::server::metrics
