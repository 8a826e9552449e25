#include "dataplane/proxy/inject_relay.h"

#include <openssl/ssl.h>
#include <sys/epoll.h>
#include <sys/socket.h>

#include "dataplane/http/response_framer.h"
#include "dataplane/mux/byte_queue.h"

namespace sigil::dataplane {
namespace {

constexpr uint32_t kEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
constexpr size_t kChunk = 16 * 1024;
constexpr size_t kMaxBuffered = 64 * 1024;
// After a refusal: how long, and how many bytes, the workload's remaining input is discarded.
constexpr std::chrono::milliseconds kLinger{2000};
constexpr size_t kMaxLingerBytes = size_t{8} << 20;
constexpr std::string_view kContinue = "HTTP/1.1 100 Continue\r\n\r\n";
using SteadyClock = std::chrono::steady_clock;

class InjectRelay : public std::enable_shared_from_this<InjectRelay> {
 public:
  InjectRelay(EventLoop& loop, std::unique_ptr<Endpoint> w, std::unique_ptr<Endpoint> u,
              InjectHooks hooks, std::chrono::milliseconds idle)
      : loop_(loop),
        w_(std::move(w)),
        u_(std::move(u)),
        hooks_(std::move(hooks)),
        idle_(idle),
        rewriter_(hooks_.on_head) {
    rewriter_.set_on_forwarded([this](const http::RequestHead& head, const http::RequestInfo&) {
      if (framer_ok_ && !framer_.ExpectResponse(head.method).ok()) framer_ok_ = false;
    });
    if (hooks_.on_body) rewriter_.set_on_body(hooks_.on_body);
  }

  void Start() {
    self_ = shared_from_this();
    last_activity_ = SteadyClock::now();
    auto ok_w = loop_.Watch(w_->fd(), kEvents, [this](uint32_t ev) { OnEvent(true, ev); });
    auto ok_u = loop_.Watch(u_->fd(), kEvents, [this](uint32_t ev) { OnEvent(false, ev); });
    stop_hook_ = loop_.AddStopHook([this] {
      stop_hook_ = 0;
      Finish("event loop stopped", true);
    });
    if (!ok_w.ok() || !ok_u.ok()) return Finish("cannot watch the sockets", true);
    ArmTimer();
    // A TLS workload endpoint may hold decrypted bytes already (read with the handshake's last
    // flight) that no socket edge will announce.
    loop_.Post([weak = weak_from_this()] {
      if (auto s = weak.lock(); s && !s->done_) s->Pump();
    });
  }

 private:
  void ArmTimer() {
    if (idle_.count() <= 0) return;
    timer_ =
        loop_.AddTimer(std::min(idle_, std::chrono::milliseconds(5000)), [weak = weak_from_this()] {
          auto s = weak.lock();
          if (!s || s->done_) return;
          s->timer_ = 0;
          if (SteadyClock::now() - s->last_activity_ > s->idle_) {
            return s->Finish("idle timeout", true);
          }
          s->ArmTimer();
        });
  }

  void OnEvent(bool workload, uint32_t ev) {
    if (done_) return;
    auto keep = shared_from_this();
    const bool rd = (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    const bool wr = (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0;
    const bool hup = (ev & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0;
    if (workload) {
      if (rd) w_readable_ = true;
      if (wr) w_writable_ = true;
      if (hup) w_hup_seen_ = true;
    } else {
      if (rd) u_readable_ = true;
      if (wr) u_writable_ = true;
      if (hup) u_hup_seen_ = true;
    }
    last_activity_ = SteadyClock::now();
    Pump();
  }

  // Reads/writes until everything waits on readiness; may Finish().
  void Pump() {
    for (int round = 0; round < 64 && !done_; ++round) {
      bool progress = false;
      progress |= WorkloadToUpstream();
      if (done_) return;
      progress |= UpstreamToWorkload();
      if (done_) return;
      MaybeRefuse();
      if (done_) return;
      MaybeClose();
      if (!progress) return;
    }
    if (!done_)
      loop_.Post([weak = weak_from_this()] {
        if (auto s = weak.lock(); s && !s->done_) s->Pump();
      });
  }

  using State = http::RequestStreamRewriter::State;

  bool WorkloadToUpstream() {
    bool progress = false;
    // Rewriter output -> upstream.
    while (!rewriter_.output().empty() && (u_write_needs_read_ ? u_readable_ : u_writable_)) {
      std::string_view out = rewriter_.output();
      IoResult r = u_->Write(std::span<const char>(out.data(), out.size()));
      if (r.status == IoStatus::kOk) {
        rewriter_.Drain(r.bytes);
        u_write_needs_read_ = false;
        progress = true;
        continue;
      }
      if (r.status == IoStatus::kWantWrite) {
        u_writable_ = false;
        u_write_needs_read_ = false;
      } else if (r.status == IoStatus::kWantRead) {
        u_readable_ = false;
        u_write_needs_read_ = true;
      } else {
        Finish("upstream write: " + r.error, true);
        return false;
      }
      break;
    }
    // Paused for an upgrade: the upstream's answer decides.
    if (rewriter_.state() == State::kPaused && framer_ok_ && framer_.outstanding() == 0) {
      rewriter_.Resume(framer_.switched());
      progress = true;
    }
    // Workload -> rewriter, while its output has room and the credential is current.
    const bool taking = rewriter_.state() == State::kHttp || rewriter_.state() == State::kOpaque ||
                        rewriter_.state() == State::kClosed;
    while (taking && !refreshing_ && rewriter_.output().size() < kMaxBuffered) {
      if (w_in_.empty()) {
        if (w_eof_ || !(w_read_needs_write_ ? w_writable_ : w_readable_)) break;
        auto tail = w_in_.Tail(kChunk);
        IoResult r = w_->Read(tail.first(kChunk));
        w_read_needs_write_ = false;
        if (r.status == IoStatus::kOk) {
          w_in_.Commit(r.bytes);
          progress = true;
          // A short read of a plain socket emptied its receive queue: whatever arrives next
          // raises a new edge, so the read that would only return EAGAIN is skipped (one
          // syscall per request). Not once the peer's FIN may be queued behind the data: its
          // edge has been delivered already, and only reading to the end finds it.
          if (r.bytes < kChunk && !w_->is_tls() && !w_hup_seen_) w_readable_ = false;
        } else if (r.status == IoStatus::kWantRead || r.status == IoStatus::kWantWrite) {
          if (w_in_.empty()) w_in_.Release();
          if (r.status == IoStatus::kWantWrite) {  // TLS: a read that must write first
            w_writable_ = false;
            w_read_needs_write_ = true;
          } else {
            w_readable_ = false;
          }
          break;
        } else if (r.status == IoStatus::kEof) {
          if (w_in_.empty()) w_in_.Release();
          w_eof_ = true;
          break;
        } else {
          Finish("workload: " + r.error, true);
          return false;
        }
      }
      if (rewriter_.state() == State::kHttp && !rewriter_.mid_request() && hooks_.fresh &&
          !hooks_.fresh()) {
        // A new request may start here: renew the credential first (off the loop).
        refreshing_ = true;
        hooks_.refresh([weak = weak_from_this(), remote = loop_.remote()] {
          remote->Post([weak] {
            auto s = weak.lock();
            if (!s || s->done_) return;
            s->refreshing_ = false;
            s->Pump();
          });
        });
        break;
      }
      auto in = w_in_.readable();
      const size_t taken = rewriter_.Feed(std::string_view(in.data(), in.size()));
      w_in_.Consume(taken);
      if (taken > 0) progress = true;
      if (taken == 0) break;
    }
    MaybeContinue(progress);
    return progress;
  }

  // A held request whose client waits for 100 Continue: answer it once the upstream has
  // answered everything forwarded before (an interim response must not land inside another).
  void MaybeContinue(bool& progress) {
    if (!rewriter_.continue_wanted() || !framer_ok_ || framer_switched_) return;
    if (framer_.completed() < rewriter_.requests_forwarded()) return;
    to_w_.Append(kContinue);
    rewriter_.ContinueSent();
    progress = true;
  }

  bool UpstreamToWorkload() {
    bool progress = false;
    if (!FlushToWorkload(progress)) return false;
    while (!u_eof_ && to_w_.size() < kMaxBuffered &&
           (u_read_needs_write_ ? u_writable_ : u_readable_)) {
      auto tail = to_w_.Tail(kChunk);
      IoResult r = u_->Read(tail.first(kChunk));
      if (r.status == IoStatus::kOk) {
        if (framer_ok_ && !framer_switched_) {
          if (!framer_.Feed(std::string_view(tail.data(), r.bytes)).ok()) framer_ok_ = false;
          if (framer_.switched()) framer_switched_ = true;
        }
        to_w_.Commit(r.bytes);
        u_read_needs_write_ = false;
        progress = true;
        if (UpstreamDrained(r.bytes)) {
          u_readable_ = false;
          break;
        }
        continue;
      }
      if (to_w_.empty()) to_w_.Release();
      if (r.status == IoStatus::kWantRead) {
        u_readable_ = false;
        u_read_needs_write_ = false;
      } else if (r.status == IoStatus::kWantWrite) {
        u_writable_ = false;
        u_read_needs_write_ = true;
      } else if (r.status == IoStatus::kEof) {
        u_eof_ = true;
        progress = true;
      } else {
        Finish("upstream: " + r.error, true);
        return false;
      }
      break;
    }
    if (!FlushToWorkload(progress)) return false;  // what was just read
    return progress;
  }

  // After a read of `n` bytes from the upstream: whether the next read can only return
  // EAGAIN, so it is skipped. Plain: a short read. TLS: OpenSSL holds no further byte and every
  // response the upstream owes is complete, so nothing more is expected before the next
  // request, whose answer raises a new edge (bytes the upstream sends unasked wait until then,
  // or the idle timeout). Never once a FIN may be queued (see the workload side).
  bool UpstreamDrained(size_t n) const {
    if (u_hup_seen_) return false;
    if (!u_->is_tls()) return n < kChunk;
    return u_->ssl() != nullptr && SSL_has_pending(u_->ssl()) == 0 && framer_ok_ &&
           !framer_switched_ && framer_.outstanding() == 0;
  }

  // Writes the queued upstream bytes to the workload; false when the relay ended.
  bool FlushToWorkload(bool& progress) {
    while (!to_w_.empty() && (w_write_needs_read_ ? w_readable_ : w_writable_)) {
      auto out = to_w_.readable();
      IoResult r = w_->Write(out);
      w_write_needs_read_ = false;
      if (r.status == IoStatus::kOk) {
        to_w_.Consume(r.bytes);
        progress = true;
        continue;
      }
      if (r.status == IoStatus::kWantWrite) {
        w_writable_ = false;
        break;
      }
      if (r.status == IoStatus::kWantRead) {  // TLS: a write that must read first
        w_readable_ = false;
        w_write_needs_read_ = true;
        break;
      }
      Finish("workload write: " + r.error, true);
      return false;
    }
    return true;
  }

  // A refused request: once the upstream answered everything forwarded before it (or cannot
  // be followed), the workload gets the error response and the connection ends.
  void MaybeRefuse() {
    if (rewriter_.state() != State::kRejected) return;
    if (!refused_reported_) {
      refused_reported_ = true;
      if (hooks_.on_refused) hooks_.on_refused(rewriter_.error_status(), rewriter_.error_reason());
      if (rewriter_.upstream_tainted()) return Finish("refused mid-request", true);
    }
    const bool answered =
        !framer_ok_ || u_eof_ || framer_.completed() >= rewriter_.requests_forwarded();
    if (!answered || !to_w_.empty() || error_sent_) return;
    error_sent_ = true;
    to_w_.Append(rewriter_.error_response());
    u_eof_ = true;  // nothing more from the upstream is relayed
    UpstreamToWorkload();
  }

  void MaybeClose() {
    if (done_) return;
    if (rewriter_.state() == State::kRejected) {
      // The error response is the last thing the workload gets; then our direction ends and
      // what the workload still sends is discarded for a while (lingering close): closing a
      // socket with unread input resets the connection, which can destroy the response
      // before the workload read it.
      if (error_sent_ && to_w_.empty()) Linger();
      return;
    }
    // The workload finished sending: end the upstream's direction after the pending bytes.
    if (w_eof_ && w_in_.empty() && rewriter_.output().empty() && !u_shut_) {
      IoResult r = u_->ShutdownWrite();
      if (r.status != IoStatus::kWantWrite && r.status != IoStatus::kWantRead) u_shut_ = true;
    }
    // The upstream finished: end the workload's direction after the pending bytes.
    if (u_eof_ && to_w_.empty() && !w_shut_) {
      IoResult r = w_->ShutdownWrite();  // TLS: close_notify first
      if (r.status != IoStatus::kWantWrite && r.status != IoStatus::kWantRead) w_shut_ = true;
    }
    if (u_shut_ && w_shut_) Finish("", false);
  }

  void Linger() {
    if (!w_shut_) {
      IoResult r = w_->ShutdownWrite();
      if (r.status == IoStatus::kWantWrite || r.status == IoStatus::kWantRead) return;
      w_shut_ = true;
      linger_timer_ = loop_.AddTimer(kLinger, [weak = weak_from_this()] {
        auto s = weak.lock();
        if (!s || s->done_) return;
        s->linger_timer_ = 0;
        s->Finish("", false);
      });
    }
    char scratch[kChunk];
    while (!w_eof_ && w_readable_ && lingered_ < kMaxLingerBytes) {
      IoResult r = w_->Read(std::span<char>(scratch, sizeof scratch));
      if (r.status == IoStatus::kOk) {
        lingered_ += r.bytes;
      } else if (r.status == IoStatus::kWantRead || r.status == IoStatus::kWantWrite) {
        w_readable_ = false;
      } else {
        w_eof_ = true;  // EOF, reset or error: nothing more to wait for
      }
    }
    if (w_eof_ || lingered_ >= kMaxLingerBytes) Finish("", false);
  }

  void Finish(const std::string& error, bool reset) {
    if (done_) return;
    done_ = true;
    loop_.Unwatch(w_->fd());
    loop_.Unwatch(u_->fd());
    if (reset) {
      w_->Abort();
      u_->Abort();
    } else {
      w_->Close();
      u_->Close();
    }
    w_in_.Release();
    to_w_.Release();
    if (timer_ != 0) loop_.CancelTimer(timer_);
    if (linger_timer_ != 0) loop_.CancelTimer(linger_timer_);
    if (stop_hook_ != 0) loop_.RemoveStopHook(stop_hook_);
    if (hooks_.on_end) hooks_.on_end(error);
    loop_.Post([keep = std::move(self_)] {});
  }

  EventLoop& loop_;
  std::unique_ptr<Endpoint> w_, u_;
  InjectHooks hooks_;
  std::chrono::milliseconds idle_;
  http::RequestStreamRewriter rewriter_;
  http::ResponseFramer framer_;
  bool framer_ok_ = true, framer_switched_ = false;
  mux::ByteQueue w_in_, to_w_;
  bool w_readable_ = true, w_writable_ = true, u_readable_ = true, u_writable_ = true;
  bool u_read_needs_write_ = false, u_write_needs_read_ = false;
  bool w_read_needs_write_ = false, w_write_needs_read_ = false;
  bool w_eof_ = false, u_eof_ = false, w_shut_ = false, u_shut_ = false;
  bool w_hup_seen_ = false, u_hup_seen_ = false;  // EPOLLRDHUP/HUP/ERR reported once
  bool refreshing_ = false, refused_reported_ = false, error_sent_ = false, done_ = false;
  SteadyClock::time_point last_activity_;
  EventLoop::TimerId timer_ = 0, linger_timer_ = 0;
  size_t lingered_ = 0;
  EventLoop::HookId stop_hook_ = 0;
  std::shared_ptr<InjectRelay> self_;
};

}  // namespace

void StartInjectRelay(EventLoop& loop, std::unique_ptr<Endpoint> workload,
                      std::unique_ptr<Endpoint> upstream, InjectHooks hooks,
                      std::chrono::milliseconds idle_timeout) {
  auto relay = std::make_shared<InjectRelay>(loop, std::move(workload), std::move(upstream),
                                             std::move(hooks), idle_timeout);
  relay->Start();
}

}  // namespace sigil::dataplane
