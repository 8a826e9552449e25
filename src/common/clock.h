// Injected time source, so rotation and expiry logic is testable without sleeping.
#pragma once

#include <atomic>
#include <chrono>

namespace sigil {

using TimePoint = std::chrono::system_clock::time_point;
using Seconds = std::chrono::seconds;

// Implementations are thread-safe.
class Clock {
 public:
  virtual ~Clock() = default;
  virtual TimePoint Now() const = 0;
  // The process-wide wall clock.
  static const Clock& System();
};

// A clock that only moves when told to. Thread-safe.
class FakeClock final : public Clock {
 public:
  explicit FakeClock(TimePoint start) : now_(start.time_since_epoch().count()) {}
  TimePoint Now() const override { return TimePoint(TimePoint::duration(now_.load())); }
  void Set(TimePoint t) { now_.store(t.time_since_epoch().count()); }
  void Advance(TimePoint::duration d) { now_.fetch_add(d.count()); }

 private:
  std::atomic<TimePoint::rep> now_;
};

// Seconds since the Unix epoch, as used by JWT and JWKS.
inline int64_t ToUnixSeconds(TimePoint t) {
  return std::chrono::duration_cast<Seconds>(t.time_since_epoch()).count();
}
inline TimePoint FromUnixSeconds(int64_t s) { return TimePoint(Seconds(s)); }

}  // namespace sigil
