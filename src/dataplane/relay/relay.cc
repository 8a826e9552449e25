// RelayCore: the per-connection state machine behind StartRelay.
//
// Readiness is edge-triggered: each side's fd is watched once for EPOLLIN|EPOLLOUT|EPOLLRDHUP
// with EPOLLET, an event sets the side's `readable`/`writable` flags, and an operation that
// would block clears the flag it waits on. An operation is attempted only when the flag it last
// waited on is set again, so a blocked direction costs no syscalls. Because a TLS read can
// need write readiness (and a TLS write read readiness), each direction remembers which flag
// its read and its write wait on. Data buffered inside OpenSSL is drained because a read keeps
// going until OpenSSL itself says WANT_READ.
//
// Fairness: one wakeup performs at most kIoBudget successful transfers; if more is possible
// the relay re-queues itself on the loop (an edge will not come again for data already there).
#include "dataplane/relay/relay.h"

#include <fcntl.h>
#include <sys/epoll.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstring>
#include <span>
#include <utility>

#include "dataplane/relay/ktls_endpoint.h"

namespace sigil::dataplane {

namespace {

std::atomic<size_t> g_buffer_bytes{0};
std::atomic<size_t> g_live_relays{0};

constexpr int kIoBudget = 64;
constexpr uint32_t kRelayEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;

// A lazily allocated byte queue of fixed capacity; see the header comment of relay.h.
class Buffer {
 public:
  Buffer() = default;
  ~Buffer() { Release(); }
  Buffer(const Buffer&) = delete;
  Buffer& operator=(const Buffer&) = delete;

  size_t size() const { return end_ - begin_; }
  std::span<const char> readable() const { return {data_.get() + begin_, size()}; }
  // Free space for a read, allocating `cap` bytes on first use.
  std::span<char> Tail(size_t cap) {
    if (!data_) {
      data_ = std::make_unique_for_overwrite<char[]>(cap);
      cap_ = cap;
      g_buffer_bytes.fetch_add(cap_, std::memory_order_relaxed);
    }
    if (begin_ > 0 && cap_ - end_ < cap_ / 2) {
      // Pending TLS writes may move: the SSL has SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER.
      std::memmove(data_.get(), data_.get() + begin_, size());
      end_ -= begin_;
      begin_ = 0;
    }
    return {data_.get() + end_, cap_ - end_};
  }
  size_t Space(size_t cap) const { return data_ ? cap_ - size() : cap; }
  void Commit(size_t n) { end_ += n; }
  void Consume(size_t n) {
    begin_ += n;
    if (begin_ == end_) begin_ = end_ = 0;
  }
  void Release() {
    if (!data_) return;
    g_buffer_bytes.fetch_sub(cap_, std::memory_order_relaxed);
    data_.reset();
    cap_ = begin_ = end_ = 0;
  }

 private:
  std::unique_ptr<char[]> data_;
  size_t cap_ = 0, begin_ = 0, end_ = 0;
};

enum class Wait : uint8_t { kNone, kReadable, kWritable };

struct Side {
  std::unique_ptr<Endpoint> ep;
  char name;  // 'a' or 'b'
  bool readable = true;
  bool writable = true;
  bool watched = false;
};

struct Direction {
  Side* src = nullptr;
  Side* dst = nullptr;
  std::string initial;
  size_t initial_off = 0;
  Buffer buf;
  // splice mode
  OwnedFd pipe_r, pipe_w;
  size_t in_pipe = 0;
  size_t pipe_cap = 0;
  bool pipe_maybe_full = false;  // splice-in said EAGAIN while the pipe held bytes
  Wait read_wait = Wait::kNone;
  Wait write_wait = Wait::kNone;
  bool eof = false;
  bool truncated = false;
  bool shut = false;  // EOF forwarded: the destination's write side is shut
  uint64_t bytes = 0;

  size_t initial_left() const { return initial.size() - initial_off; }
};

bool Ready(const Side& s, Wait w) {
  switch (w) {
    case Wait::kNone:
      return true;
    case Wait::kReadable:
      return s.readable;
    case Wait::kWritable:
      return s.writable;
  }
  return true;
}

}  // namespace

namespace detail {

class RelayCore : public std::enable_shared_from_this<RelayCore> {
 public:
  RelayCore(EventLoop& loop, std::unique_ptr<Endpoint> a, std::unique_ptr<Endpoint> b,
            RelayOptions options, std::function<void(const RelayStats&)> done)
      : loop_(loop), options_(std::move(options)), done_(std::move(done)) {
    a_.ep = std::move(a);
    a_.name = 'a';
    b_.ep = std::move(b);
    b_.name = 'b';
    ab_.src = &a_;
    ab_.dst = &b_;
    ab_.initial = std::move(options_.initial_a_to_b);
    ba_.src = &b_;
    ba_.dst = &a_;
    ba_.initial = std::move(options_.initial_b_to_a);
    options_.buffer_bytes = std::max<size_t>(options_.buffer_bytes, 1);
    g_live_relays.fetch_add(1, std::memory_order_relaxed);
  }
  // Only reached without End() when the loop was destroyed before the relay could start
  // (StartRelay posted from another thread): still report, exactly once.
  ~RelayCore() {
    if (!ended_ && done_) {
      for (Side* s : {&a_, &b_}) {
        if (s->ep) s->ep->Abort();
      }
      stats_.error = "event loop stopped";
      done_(stats_);
    }
    g_live_relays.fetch_sub(1, std::memory_order_relaxed);
  }

  void Start() {
    std::shared_ptr<RelayCore> self = shared_from_this();
    if (!a_.ep || !b_.ep || a_.ep->closed() || b_.ep->closed()) {
      End("relay: missing or closed endpoint", /*rst=*/true);
      return;
    }
    // Plain and kTLS sockets carry payload bytes: splice them when asked to, and always when
    // kTLS is involved (keeping bulk bytes out of user space is the point of kTLS).
    const bool ktls = a_.ep->is_ktls() || b_.ep->is_ktls();
    splice_ = a_.ep->can_splice() && b_.ep->can_splice() &&
              (options_.use_splice || (ktls && options_.splice_kernel_tls));
    stats_.spliced = splice_;
    for (Side* s : {&a_, &b_}) {
      auto watched =
          loop_.Watch(s->ep->fd(), kRelayEvents, [self, s](uint32_t ev) { self->OnEvent(*s, ev); });
      if (!watched.ok()) {
        End(std::string("relay: watch ") + s->name + ": " + watched.error().message(), true);
        return;
      }
      s->watched = true;
    }
    hook_ = loop_.AddStopHook([self] {
      self->hook_ = 0;
      self->Abort("event loop stopped");
    });
    last_activity_ = Clock::now();
    if (options_.idle_timeout.count() > 0) ArmIdle(options_.idle_timeout);
    PumpAll();
  }

  void Abort(const std::string& reason) {
    if (ended_) return;
    End(reason, /*rst=*/true);
  }

 private:
  using Clock = std::chrono::steady_clock;

  void OnEvent(Side& s, uint32_t ev) {
    if (ended_) return;
    if (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) s.readable = true;
    if (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) s.writable = true;
    PumpAll();
  }

  void ArmIdle(std::chrono::milliseconds after) {
    std::shared_ptr<RelayCore> self = shared_from_this();
    idle_timer_ = loop_.AddTimer(after, [self] {
      self->idle_timer_ = 0;
      self->OnIdleTimer();
    });
  }

  void OnIdleTimer() {
    if (ended_) return;
    auto idle = Clock::now() - last_activity_;
    if (idle >= options_.idle_timeout) {
      stats_.idle_timeout = true;
      End("idle timeout", /*rst=*/true);
      return;
    }
    ArmIdle(std::chrono::ceil<std::chrono::milliseconds>(options_.idle_timeout - idle));
  }

  void PumpAll() {
    if (ended_) return;
    std::shared_ptr<RelayCore> keep = shared_from_this();
    int budget = kIoBudget;
    for (;;) {
      bool p1 = Pump(ab_, budget);
      if (ended_) return;
      bool p2 = Pump(ba_, budget);
      if (ended_) return;
      if (ab_.shut && ba_.shut) {
        End("", /*rst=*/false);
        return;
      }
      if (!p1 && !p2) return;
      if (budget <= 0) {
        if (!repump_queued_) {
          repump_queued_ = true;
          loop_.Post([keep] {
            keep->repump_queued_ = false;
            keep->PumpAll();
          });
        }
        return;
      }
    }
  }

  // Moves what it can in one direction. Returns whether anything happened.
  bool Pump(Direction& d, int& budget) {
    bool any = false;
    while (budget > 0 && !ended_) {
      bool progressed = false;
      // 1. Flush pending bytes (initial bytes first) to the destination.
      size_t pending = d.initial_left() + (splice_ ? d.in_pipe : d.buf.size());
      if (pending > 0 && Ready(*d.dst, d.write_wait)) {
        d.write_wait = Wait::kNone;
        IoResult r;
        if (d.initial_left() > 0) {
          r = d.dst->ep->Write(
              std::span<const char>(d.initial.data() + d.initial_off, d.initial_left()));
        } else if (splice_) {
          r = SpliceOut(d);
        } else {
          r = d.dst->ep->Write(d.buf.readable());
        }
        if (r.status == IoStatus::kOk) {
          if (d.initial_left() > 0) {
            d.initial_off += r.bytes;
            if (d.initial_left() == 0) {
              std::string().swap(d.initial);
              d.initial_off = 0;
            }
          } else if (splice_) {
            d.in_pipe -= r.bytes;
            d.pipe_maybe_full = false;
          } else {
            d.buf.Consume(r.bytes);
          }
          d.bytes += r.bytes;
          last_activity_ = Clock::now();
          progressed = true;
          --budget;
        } else if (!Blocked(r, *d.dst, d.write_wait)) {
          Failed(r, *d.dst);
          return true;
        }
      }
      pending = d.initial_left() + (splice_ ? d.in_pipe : d.buf.size());
      // 2. Forward EOF once everything before it is out.
      if (pending == 0 && d.eof && !d.shut && Ready(*d.dst, d.write_wait)) {
        d.write_wait = Wait::kNone;
        IoResult r = d.dst->ep->ShutdownWrite();
        if (r.status == IoStatus::kOk) {
          d.shut = true;
          progressed = true;
        } else if (Blocked(r, *d.dst, d.write_wait)) {
          // kTLS may be waiting for the kernel to hand its last records to TCP, which raises
          // no event of its own: look again shortly.
          if (r.status == IoStatus::kWantWrite && d.dst->ep->is_ktls()) ArmShutdownRetry(*d.dst);
        } else {
          Failed(r, *d.dst);
          return true;
        }
      }
      // 3. Read more from the source while there is room.
      size_t space =
          splice_ ? (d.pipe_maybe_full ? 0 : PipeSpace(d)) : d.buf.Space(options_.buffer_bytes);
      if (!d.eof && space > 0 && Ready(*d.src, d.read_wait)) {
        d.read_wait = Wait::kNone;
        IoResult r = splice_ ? SpliceIn(d) : d.src->ep->Read(d.buf.Tail(options_.buffer_bytes));
        if (r.status == IoStatus::kOk) {
          if (r.bytes > 0) {
            if (!splice_) d.buf.Commit(r.bytes);
            last_activity_ = Clock::now();
            progressed = true;
            --budget;
          }
        } else if (r.status == IoStatus::kEof) {
          d.eof = true;
          d.truncated = r.truncated;
          if (r.truncated) (d.src == &a_ ? stats_.a_truncated : stats_.b_truncated) = true;
          progressed = true;
        } else if (!Blocked(r, *d.src, d.read_wait)) {
          Failed(r, *d.src);
          return true;
        }
      }
      if (!progressed) break;
      any = true;
    }
    if (!splice_ && d.buf.size() == 0) d.buf.Release();
    return any;
  }

  // For kWantRead/kWantWrite: records what the operation waits on and returns true.
  static bool Blocked(const IoResult& r, Side& s, Wait& wait) {
    if (r.status == IoStatus::kWantRead) {
      s.readable = false;
      wait = Wait::kReadable;
      return true;
    }
    if (r.status == IoStatus::kWantWrite) {
      s.writable = false;
      wait = Wait::kWritable;
      return true;
    }
    return false;
  }

  void Failed(const IoResult& r, Side& s) {
    std::string where(1, s.name);
    if (r.status == IoStatus::kReset || r.status == IoStatus::kEof) {
      (s.name == 'a' ? stats_.a_reset : stats_.b_reset) = true;
      End(where + ": connection reset" + (r.error.empty() ? "" : " (" + r.error + ")"), true);
      return;
    }
    End(where + ": " + r.error, true);
  }

  // Sets `side` writable after a short, growing delay (1 ms doubling to 64 ms) and pumps. The
  // idle timeout still bounds the whole wait (last_activity_ is not touched).
  void ArmShutdownRetry(Side& side) {
    if (shutdown_timer_ != 0) return;
    std::shared_ptr<RelayCore> self = shared_from_this();
    Side* s = &side;
    shutdown_timer_ = loop_.AddTimer(shutdown_retry_, [self, s] {
      self->shutdown_timer_ = 0;
      if (self->ended_) return;
      s->writable = true;
      self->PumpAll();
    });
    shutdown_retry_ = std::min(shutdown_retry_ * 2, std::chrono::milliseconds(64));
  }

  // ---- splice mode ----

  size_t PipeSpace(Direction& d) {
    if (!d.pipe_r.valid()) {
      int p[2];
      if (::pipe2(p, O_NONBLOCK | O_CLOEXEC) != 0) return 0;  // SpliceIn reports the error
      d.pipe_r.Reset(p[0]);
      d.pipe_w.Reset(p[1]);
      int want = static_cast<int>(std::min<size_t>(options_.buffer_bytes, 1 << 20));
      int cap = ::fcntl(d.pipe_w.get(), F_SETPIPE_SZ, want);
      if (cap <= 0) cap = ::fcntl(d.pipe_w.get(), F_GETPIPE_SZ);
      d.pipe_cap = cap > 0 ? static_cast<size_t>(cap) : 4096;
    }
    return d.pipe_cap - d.in_pipe;
  }

  IoResult SpliceIn(Direction& d) {
    IoResult r;
    if (!d.pipe_w.valid()) {
      r.status = IoStatus::kError;
      r.error = "pipe2 failed";
      return r;
    }
    r = d.src->ep->SpliceToPipe(d.pipe_w.get(), d.pipe_cap - d.in_pipe);
    if (r.status == IoStatus::kOk) {
      d.in_pipe += r.bytes;
    } else if (r.status == IoStatus::kWantRead && d.in_pipe > 0) {
      // Either the socket is drained or the pipe ran out of slots: retry after the next
      // splice-out, which is bound to happen since the pipe holds bytes. Nothing moved and
      // no readiness flag changes (kOk with 0 bytes).
      d.pipe_maybe_full = true;
      r = IoResult{};
    }
    return r;
  }

  IoResult SpliceOut(Direction& d) { return d.dst->ep->SpliceFromPipe(d.pipe_r.get(), d.in_pipe); }

  // ---- ending ----

  void End(std::string error, bool rst) {
    if (ended_) return;
    ended_ = true;
    std::shared_ptr<RelayCore> keep = shared_from_this();
    if (idle_timer_ != 0) loop_.CancelTimer(std::exchange(idle_timer_, 0));
    if (shutdown_timer_ != 0) loop_.CancelTimer(std::exchange(shutdown_timer_, 0));
    if (hook_ != 0) loop_.RemoveStopHook(std::exchange(hook_, 0));
    for (Side* s : {&a_, &b_}) {
      if (s->watched) loop_.Unwatch(s->ep->fd());
      s->watched = false;
      if (s->ep && s->ep->ktls() != nullptr) {
        stats_.ktls_tickets += s->ep->ktls()->tickets_skipped();
        stats_.ktls_flush_waits += s->ep->ktls()->flush_waits();
      }
      if (s->ep) {
        if (rst) {
          s->ep->Abort();
        } else {
          s->ep->Close();
        }
      }
    }
    for (Direction* d : {&ab_, &ba_}) {
      d->buf.Release();
      d->pipe_r.Reset();
      d->pipe_w.Reset();
      std::string().swap(d->initial);
    }
    stats_.a_to_b_bytes = ab_.bytes;
    stats_.b_to_a_bytes = ba_.bytes;
    stats_.error = std::move(error);
    a_.ep.reset();
    b_.ep.reset();
    auto done = std::move(done_);
    if (done) done(stats_);
  }

  EventLoop& loop_;
  RelayOptions options_;
  std::function<void(const RelayStats&)> done_;
  Side a_, b_;
  Direction ab_, ba_;
  RelayStats stats_;
  bool splice_ = false;
  bool ended_ = false;
  bool repump_queued_ = false;
  EventLoop::TimerId idle_timer_ = 0;
  EventLoop::TimerId shutdown_timer_ = 0;
  std::chrono::milliseconds shutdown_retry_{1};
  EventLoop::HookId hook_ = 0;
  Clock::time_point last_activity_;
};

}  // namespace detail

void RelayHandle::Abort() {
  std::weak_ptr<detail::RelayCore> weak = core_;
  remote_->Post([weak] {
    if (auto core = weak.lock()) core->Abort("aborted");
  });
}

std::shared_ptr<RelayHandle> StartRelay(EventLoop& loop, std::unique_ptr<Endpoint> a,
                                        std::unique_ptr<Endpoint> b, RelayOptions options,
                                        std::function<void(const RelayStats&)> done) {
  auto core = std::make_shared<detail::RelayCore>(loop, std::move(a), std::move(b),
                                                  std::move(options), std::move(done));
  auto handle = std::make_shared<RelayHandle>(loop.remote(), core);
  if (loop.InLoopThread()) {
    core->Start();
  } else {
    loop.Post([core] { core->Start(); });
  }
  return handle;
}

size_t RelayBufferBytesInUse() { return g_buffer_bytes.load(std::memory_order_relaxed); }

size_t LiveRelays() { return g_live_relays.load(std::memory_order_relaxed); }

}  // namespace sigil::dataplane
