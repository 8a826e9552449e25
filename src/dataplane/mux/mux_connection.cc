#include "dataplane/mux/mux_connection.h"

#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace sigil::dataplane::mux {
namespace {

constexpr uint32_t kEvents = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
constexpr size_t kReadChunk = 64 * 1024;
constexpr size_t kFramesPerRead = 4;  // DATA frames filled by one read of a local socket
constexpr int kReadBudget = 64;       // connection reads per wakeup before yielding to the loop
// A WINDOW frame returns credit once this much has been written to the local socket; with the
// rest of the window the peer keeps sending meanwhile.
constexpr uint32_t kWindowUpdate = kInitialWindow / 4;

using SteadyClock = std::chrono::steady_clock;

bool ReadEvent(uint32_t ev) { return (ev & (EPOLLIN | EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0; }
bool WriteEvent(uint32_t ev) { return (ev & (EPOLLOUT | EPOLLHUP | EPOLLERR)) != 0; }

}  // namespace

struct MuxConnection::Stream {
  uint32_t id = 0;
  OwnedFd fd;             // invalid on the server until Accept
  bool accepted = false;  // client: always; server: after Accept
  bool readable = false;  // edge-triggered readiness of fd
  bool writable = false;
  bool local_eof = false;                 // EOF read from fd, FIN queued
  bool remote_fin = false;                // FIN received
  bool shut_wr = false;                   // fd's write side shut after remote_fin
  bool blocked = false;                   // listed in blocked_
  bool hup_seen = false;                  // an event reported the peer's EOF/hangup
  bool bulk = false;                      // the last local read filled all it asked for
  uint32_t send_credit = kInitialWindow;  // bytes we may still send
  uint32_t recv_credit = kInitialWindow;  // bytes the peer may still send
  uint32_t unacked = 0;                   // written to fd, not yet returned as credit
  ByteQueue to_local;
  std::unique_ptr<StreamFilter> filter;  // when set, peer bytes pass through it
  ByteQueue raw_in;                      // peer bytes the filter has not taken yet
  uint64_t sent = 0, received = 0;
  SteadyClock::time_point last_activity;
};

std::shared_ptr<MuxConnection> MuxConnection::Start(EventLoop& loop, std::unique_ptr<Endpoint> ep,
                                                    MuxOptions options, MuxHooks hooks,
                                                    std::string leftover) {
  std::shared_ptr<MuxConnection> c(
      new MuxConnection(loop, std::move(ep), std::move(options), std::move(hooks)));
  c->self_ = c;
  c->idle_since_ = SteadyClock::now();
  c->in_.Append(leftover);
  MuxConnection* raw = c.get();
  c->stop_hook_ = loop.AddStopHook([raw] {
    raw->stop_hook_ = 0;
    if (raw->closed_) return;
    auto keep = raw->shared_from_this();
    raw->Finish("event loop stopped", false);
  });
  auto watched = loop.Watch(c->ep_->fd(), kEvents, [raw](uint32_t ev) { raw->OnConnEvent(ev); });
  if (!watched.ok()) {
    loop.Post([c, why = watched.error().message()] {
      if (!c->closed_) c->Finish("watch: " + why, false);
    });
    return c;
  }
  auto shortest = c->options_.stream_idle_timeout;
  if (c->options_.idle_close.count() > 0) shortest = std::min(shortest, c->options_.idle_close);
  const auto period =
      std::clamp(shortest / 4, std::chrono::milliseconds(50), std::chrono::milliseconds(5000));
  std::weak_ptr<MuxConnection> weak = c;
  c->tick_ = loop.AddTimer(period, [weak] {
    if (auto s = weak.lock()) s->Tick();
  });
  return c;
}

MuxConnection::MuxConnection(EventLoop& loop, std::unique_ptr<Endpoint> ep, MuxOptions options,
                             MuxHooks hooks)
    : loop_(loop), ep_(std::move(ep)), options_(std::move(options)), hooks_(std::move(hooks)) {}

MuxConnection::~MuxConnection() = default;

MuxConnection::Stream* MuxConnection::Find(uint32_t id) {
  auto it = streams_.find(id);
  return it == streams_.end() ? nullptr : it->second.get();
}

MuxConnection::Stream& MuxConnection::NewStream(uint32_t id) {
  auto s = std::make_unique<Stream>();
  s->id = id;
  s->last_activity = SteadyClock::now();
  Stream& ref = *s;
  streams_.emplace(id, std::move(s));
  return ref;
}

void MuxConnection::Queue(std::string_view frame) {
  out_.Append(frame);
  counters_.frames_out++;
}

void MuxConnection::PostPump() {
  if (pump_posted_) return;
  pump_posted_ = true;
  loop_.Post([weak = weak_from_this()] {
    auto s = weak.lock();
    if (!s) return;
    s->pump_posted_ = false;
    if (!s->closed_) s->Pump();
  });
}

void MuxConnection::PostStreamPump(uint32_t id) {
  loop_.Post([weak = weak_from_this(), id] {
    auto c = weak.lock();
    if (!c || c->closed_) return;
    if (Stream* s = c->Find(id)) {
      c->PumpStream(*s);
      if (!c->closed_) c->Flush();
    }
  });
}

Result<uint32_t> MuxConnection::Open(OwnedFd fd, const Destination& dst) {
  if (!CanOpen()) return Unavailable("sigil/2 connection is closed or full");
  const uint32_t id = next_id_;
  next_id_ += 2;
  if (next_id_ >= 0x7fff0000u) draining_ = true;  // ids are never reused: this one is spent
  Stream& s = NewStream(id);
  s.fd = std::move(fd);
  s.accepted = true;
  Queue(EncodeOpen(id, dst));
  counters_.streams_opened++;
  WatchStream(s);
  PostPump();
  return id;
}

void MuxConnection::Accept(uint32_t id, OwnedFd fd, std::string_view prefix,
                           std::unique_ptr<StreamFilter> filter) {
  Stream* s = closed_ ? nullptr : Find(id);
  if (s == nullptr || s->accepted) return;  // reset meanwhile: `fd` closes here
  s->fd = std::move(fd);
  s->accepted = true;
  if (filter) {
    // What arrived before the filter existed goes through it too.
    s->filter = std::move(filter);
    while (!s->to_local.empty()) {
      auto data = s->to_local.readable();
      s->raw_in.Append(std::string_view(data.data(), data.size()));
      s->to_local.Consume(data.size());
    }
  }
  s->to_local.Prepend(prefix);
  buffered_ += prefix.size();
  Queue(EncodeReply(id, 200, "OK"));
  counters_.streams_opened++;
  WatchStream(*s);
  PostPump();
}

void MuxConnection::Refuse(uint32_t id, int code, std::string_view reason) {
  Stream* s = closed_ ? nullptr : Find(id);
  if (s == nullptr || s->accepted) return;
  Queue(EncodeReply(id, code, reason));
  buffered_ -= s->to_local.size() + s->raw_in.size();
  streams_.erase(id);
  if (streams_.empty()) idle_since_ = SteadyClock::now();
  PostPump();
}

void MuxConnection::Close(const std::string& why) {
  if (closed_) return;
  auto keep = shared_from_this();
  Finish(why, false);
}

void MuxConnection::Drain() {
  draining_ = true;
  if (streams_.empty() && !closed_) {
    loop_.Post([weak = weak_from_this()] {
      if (auto s = weak.lock(); s && !s->closed_ && s->streams_.empty()) s->Finish("drained", true);
    });
  }
}

void MuxConnection::WatchStream(Stream& s) {
  const uint32_t id = s.id;
  auto watched =
      loop_.Watch(s.fd.get(), kEvents, [this, id](uint32_t ev) { OnStreamEvent(id, ev); });
  if (watched.ok()) return;
  // Out of epoll resources: end the stream from the loop, not from inside Open/Accept.
  loop_.Post([weak = weak_from_this(), id] {
    auto c = weak.lock();
    if (!c || c->closed_) return;
    if (Stream* st = c->Find(id)) {
      c->EndStream(*st, true, "cannot watch the local socket", true);
      c->Flush();
    }
  });
}

void MuxConnection::OnConnEvent(uint32_t events) {
  if (closed_) return;
  auto keep = shared_from_this();
  if (ReadEvent(events)) readable_ = true;
  if (WriteEvent(events)) writable_ = true;
  Pump();
}

void MuxConnection::OnStreamEvent(uint32_t id, uint32_t events) {
  if (closed_) return;
  auto keep = shared_from_this();
  Stream* s = Find(id);
  if (s == nullptr) return;
  if (ReadEvent(events)) s->readable = true;
  if (WriteEvent(events)) s->writable = true;
  if ((events & (EPOLLRDHUP | EPOLLHUP | EPOLLERR)) != 0) s->hup_seen = true;
  PumpStream(*s);
  // Flush once after the loop's current batch of events, so frames read from several streams
  // in one batch leave in one TLS record and one send().
  if (!closed_) PostFlush();
}

void MuxConnection::PostFlush() {
  if (flush_posted_) return;
  flush_posted_ = true;
  loop_.Post([weak = weak_from_this()] {
    auto c = weak.lock();
    if (!c) return;
    c->flush_posted_ = false;
    if (!c->closed_) c->Flush();
  });
}

void MuxConnection::Pump() {
  Flush();
  if (closed_ || !ReadFrames()) return;
  Flush();
}

bool MuxConnection::ReadFrames() {
  int budget = kReadBudget;
  for (;;) {
    // Frames already buffered first.
    while (!reading_paused_) {
      Frame f;
      auto view = in_.readable();
      auto n = ParseFrame(std::string_view(view.data(), view.size()), &f);
      if (!n.ok()) {
        ProtocolError(n.error().message());
        return false;
      }
      if (*n == 0) break;
      counters_.frames_in++;
      if (!HandleFrame(f)) return false;
      in_.Consume(*n);
    }
    if (reading_paused_ || closed_) return !closed_;
    if (!(read_needs_write_ ? writable_ : readable_)) return true;
    if (budget-- == 0) {
      PostPump();  // more may be waiting; an edge will not come again for it
      return true;
    }
    auto tail = in_.Tail(kReadChunk);
    IoResult r = ep_->Read(tail.first(std::min(tail.size(), kReadChunk)));
    switch (r.status) {
      case IoStatus::kOk:
        in_.Commit(r.bytes);
        read_needs_write_ = false;
        if (in_.empty()) in_.Release();
        break;
      case IoStatus::kWantRead:
        if (in_.empty()) in_.Release();
        readable_ = false;
        read_needs_write_ = false;
        return true;
      case IoStatus::kWantWrite:
        if (in_.empty()) in_.Release();
        writable_ = false;
        read_needs_write_ = true;
        return true;
      case IoStatus::kEof:
        Finish(r.truncated ? "peer closed the connection without close_notify"
                           : "peer closed the connection",
               streams_.empty());
        return false;
      case IoStatus::kReset:
      case IoStatus::kError:
        Finish(r.error.empty() ? "connection reset" : r.error, false);
        return false;
    }
  }
}

bool MuxConnection::HandleFrame(const Frame& f) {
  Stream* s = Find(f.stream);
  const bool was_opened = options_.client ? f.stream < next_id_ : f.stream <= last_opened_;
  if (f.type == FrameType::kOpen) {
    if (options_.client) {
      ProtocolError("the server opened a stream");
      return false;
    }
    if (was_opened || f.stream % 2 == 0) {
      ProtocolError("OPEN of stream " + std::to_string(f.stream) + " (reused or even id)");
      return false;
    }
    last_opened_ = f.stream;
    if (draining_ || streams_.size() >= options_.max_streams) {
      Queue(EncodeReply(f.stream, 503, "too many streams on this connection"));
      return true;
    }
    NewStream(f.stream);
    if (hooks_.on_open) hooks_.on_open(f.stream, f.open_dst);
    return !closed_;
  }
  if (s == nullptr) {
    if (was_opened) return true;  // a stream that ended meanwhile: drop
    ProtocolError(std::string(FrameTypeName(f.type)) + " for unknown stream " +
                  std::to_string(f.stream));
    return false;
  }
  switch (f.type) {
    case FrameType::kOpen:
      break;
    case FrameType::kReply:
      if (!options_.client) {
        ProtocolError("REPLY from the client");
        return false;
      }
      if (hooks_.on_reply) hooks_.on_reply(f.stream, f.reply_code, f.reply_reason);
      if (f.reply_code != 200) {
        if (Stream* again = Find(f.stream)) {
          EndStream(*again, true,
                    "refused: " + std::to_string(f.reply_code) + " " + std::string(f.reply_reason),
                    false);
        }
      }
      return !closed_;
    case FrameType::kData: {
      if (s->remote_fin) {
        ProtocolError("DATA after FIN on stream " + std::to_string(f.stream));
        return false;
      }
      if (f.payload.size() > s->recv_credit) {
        ProtocolError("stream " + std::to_string(f.stream) + " sent beyond its window");
        return false;
      }
      s->recv_credit -= static_cast<uint32_t>(f.payload.size());
      s->received += f.payload.size();
      s->last_activity = SteadyClock::now();
      std::string_view rest = f.payload;
      if (!s->filter && s->to_local.empty() && s->writable && s->fd.valid()) {
        // Straight from the frame to the socket: no copy through the stream's buffer.
        const ssize_t n =
            ::send(s->fd.get(), rest.data(), rest.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n > 0) {
          s->unacked += static_cast<uint32_t>(n);
          rest.remove_prefix(static_cast<size_t>(n));
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
          s->writable = false;
        } else if (n < 0 && errno != EINTR) {
          EndStream(*s, true, std::string("local write: ") + std::strerror(errno), true);
          return !closed_;
        }
        if (!rest.empty()) s->writable = false;  // a short write: the socket is full
      }
      (s->filter ? s->raw_in : s->to_local).Append(rest);
      buffered_ += rest.size();
      if (buffered_ > options_.max_buffered) reading_paused_ = true;
      PumpStream(*s);
      return !closed_;
    }
    case FrameType::kFin:
      if (s->remote_fin) {
        ProtocolError("second FIN on stream " + std::to_string(f.stream));
        return false;
      }
      s->remote_fin = true;
      PumpStream(*s);
      return !closed_;
    case FrameType::kRst:
      EndStream(*s, true, "reset by the peer", false);
      return !closed_;
    case FrameType::kWindow:
      if (static_cast<uint64_t>(s->send_credit) + f.window_increment > (1u << 30)) {
        ProtocolError("window overflow on stream " + std::to_string(f.stream));
        return false;
      }
      s->send_credit += f.window_increment;
      PumpStream(*s);
      return !closed_;
  }
  return true;
}

void MuxConnection::PumpStream(Stream& s) {
  if (!s.fd.valid()) return;  // server: the application connection is not up yet
  const int fd = s.fd.get();
  // Peer -> filter -> local socket. The filter's output is bounded by the filter itself; the
  // bytes it takes count as delivered for flow control.
  for (bool more = true; more;) {
    more = false;
    size_t taken = 0;
    if (s.filter && !s.raw_in.empty() && s.to_local.size() < kMaxDataPayload * 4) {
      auto raw = s.raw_in.readable();
      const size_t before = s.to_local.size();
      taken = s.filter->ToLocal(std::string_view(raw.data(), raw.size()), s.to_local);
      if (!s.filter->Failure().empty()) {
        return EndStream(s, true, "filter: " + s.filter->Failure(), true);
      }
      s.raw_in.Consume(taken);
      buffered_ = buffered_ - taken + (s.to_local.size() - before);
      s.unacked += static_cast<uint32_t>(taken);
    }
    while (!s.to_local.empty() && s.writable) {
      auto data = s.to_local.readable();
      const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
      if (n > 0) {
        s.to_local.Consume(static_cast<size_t>(n));
        buffered_ -= static_cast<size_t>(n);
        if (!s.filter) s.unacked += static_cast<uint32_t>(n);
        s.last_activity = SteadyClock::now();
        continue;
      }
      if (n < 0 && errno == EINTR) continue;
      if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        s.writable = false;
        break;
      }
      return EndStream(s, true, std::string("local write: ") + std::strerror(errno), true);
    }
    more = taken > 0 && !s.raw_in.empty() && s.to_local.empty() && s.writable;
  }
  if (reading_paused_ && buffered_ <= options_.max_buffered / 2) {
    reading_paused_ = false;
    PostPump();
  }
  if (s.unacked >= kWindowUpdate) {
    Queue(EncodeWindow(s.id, s.unacked));
    s.recv_credit += s.unacked;
    s.unacked = 0;
  }
  if (s.to_local.empty() && s.raw_in.empty() && s.remote_fin && !s.shut_wr) {
    ::shutdown(fd, SHUT_WR);
    s.shut_wr = true;
  }
  // Local socket -> peer.
  while (!s.local_eof && s.readable && s.send_credit > 0) {
    if (out_.size() >= kOutHigh) {
      if (!s.blocked) {
        s.blocked = true;
        blocked_.push_back(s.id);
      }
      break;
    }
    // Small messages keep one frame per read; after a read that came back full, up to
    // kFramesPerRead DATA frames in one recvmsg: each payload lands right after a header slot,
    // so the frames are contiguous in out_ without a copy (earlier slots are always full when a
    // later one gets bytes).
    const size_t want =
        std::min<size_t>((s.bulk ? kFramesPerRead : 1) * kMaxDataPayload, s.send_credit);
    const size_t frames = (want + kMaxDataPayload - 1) / kMaxDataPayload;
    auto tail = out_.Tail(frames * kHeaderBytes + want);
    struct iovec iov[kFramesPerRead];
    for (size_t i = 0; i < frames; ++i) {
      iov[i].iov_base = tail.data() + i * (kHeaderBytes + kMaxDataPayload) + kHeaderBytes;
      iov[i].iov_len = std::min(kMaxDataPayload, want - i * kMaxDataPayload);
    }
    struct msghdr msg {};
    msg.msg_iov = iov;
    msg.msg_iovlen = frames;
    const ssize_t n = ::recvmsg(fd, &msg, MSG_DONTWAIT);
    if (n > 0) {
      size_t left = static_cast<size_t>(n), committed = 0;
      for (size_t i = 0; i < frames && left > 0; ++i) {
        const size_t got = std::min(left, iov[i].iov_len);
        char* frame = tail.data() + committed;
        if (s.filter && s.filter->FromLocal(std::string_view(frame + kHeaderBytes, got))) {
          PostStreamPump(s.id);  // the filter can take peer bytes again
        }
        EncodeHeader(frame, FrameType::kData, s.id, got);
        committed += kHeaderBytes + got;
        left -= got;
        counters_.frames_out++;
      }
      out_.Commit(committed);
      s.send_credit -= static_cast<uint32_t>(n);
      s.sent += static_cast<size_t>(n);
      s.last_activity = SteadyClock::now();
      s.bulk = static_cast<size_t>(n) == want;
      // A short read drained the socket and the next arrival raises a new edge, unless the
      // EOF is already queued behind the data (its edge came with this wakeup).
      if (static_cast<size_t>(n) < want && !s.hup_seen) s.readable = false;
      continue;
    }
    if (n == 0) {
      s.local_eof = true;
      Queue(EncodeEmpty(FrameType::kFin, s.id));
      break;
    }
    if (errno == EINTR) continue;
    if (errno == EAGAIN || errno == EWOULDBLOCK) {
      if (out_.empty()) out_.Release();
      s.readable = false;
      break;
    }
    return EndStream(s, true, std::string("local read: ") + std::strerror(errno), true);
  }
  if (s.local_eof && s.remote_fin && s.shut_wr && s.to_local.empty() && s.raw_in.empty()) {
    EndStream(s, false, "", false);
  }
}

void MuxConnection::EndStream(Stream& s, bool reset, const std::string& error, bool send_rst) {
  if (send_rst && !closed_) Queue(EncodeEmpty(FrameType::kRst, s.id));
  if (s.fd.valid()) {
    loop_.Unwatch(s.fd.get());
    if (reset) {
      AbortSocket(std::move(s.fd));
    } else {
      s.fd.Reset();
    }
  }
  buffered_ -= s.to_local.size() + s.raw_in.size();
  StreamEnd end;
  end.id = s.id;
  end.sent = s.sent;
  end.received = s.received;
  end.reset = reset;
  end.error = error;
  const bool report = s.accepted;
  const uint32_t id = s.id;
  streams_.erase(id);  // `s` is gone from here
  if (report && hooks_.on_stream_end) hooks_.on_stream_end(end);
  if (streams_.empty()) {
    idle_since_ = SteadyClock::now();
    if (draining_ && !closed_) Drain();
  }
}

void MuxConnection::Flush() {
  for (;;) {
    while (!out_.empty() && (write_needs_read_ ? readable_ : writable_)) {
      IoResult r = ep_->Write(out_.readable());
      switch (r.status) {
        case IoStatus::kOk:
          out_.Consume(r.bytes);
          write_needs_read_ = false;
          continue;
        case IoStatus::kWantWrite:
          writable_ = false;
          write_needs_read_ = false;
          break;
        case IoStatus::kWantRead:
          readable_ = false;
          write_needs_read_ = true;
          break;
        case IoStatus::kEof:
        case IoStatus::kReset:
        case IoStatus::kError:
          Finish(r.error.empty() ? "connection reset" : r.error, false);
          return;
      }
      break;
    }
    if (closed_ || out_.size() >= kOutLow || blocked_.empty()) return;
    ResumeBlocked();
    if (closed_ || out_.empty() || !(write_needs_read_ ? readable_ : writable_)) return;
  }
}

void MuxConnection::ResumeBlocked() {
  std::vector<uint32_t> ids;
  ids.swap(blocked_);
  for (uint32_t id : ids) {
    if (closed_) return;
    if (Stream* s = Find(id)) {
      s->blocked = false;
      PumpStream(*s);
    }
  }
}

void MuxConnection::ProtocolError(const std::string& why) { Finish("sigil/2: " + why, false); }

void MuxConnection::Tick() {
  if (closed_) return;
  auto keep = shared_from_this();
  const auto now = SteadyClock::now();
  std::vector<uint32_t> idle;
  for (const auto& [id, s] : streams_) {
    if (now - s->last_activity > options_.stream_idle_timeout) idle.push_back(id);
  }
  for (uint32_t id : idle) {
    if (Stream* s = Find(id)) EndStream(*s, true, "idle timeout", true);
  }
  if (streams_.empty() && options_.idle_close.count() > 0 &&
      now - idle_since_ >= options_.idle_close) {
    return Finish("idle", true);
  }
  Flush();
  if (closed_) return;
  auto shortest = options_.stream_idle_timeout;
  if (options_.idle_close.count() > 0) shortest = std::min(shortest, options_.idle_close);
  const auto period =
      std::clamp(shortest / 4, std::chrono::milliseconds(50), std::chrono::milliseconds(5000));
  tick_ = loop_.AddTimer(period, [weak = weak_from_this()] {
    if (auto s = weak.lock()) s->Tick();
  });
}

void MuxConnection::Finish(const std::string& why, bool graceful) {
  if (closed_) return;
  closed_ = true;
  std::vector<uint32_t> ids;
  ids.reserve(streams_.size());
  for (const auto& [id, s] : streams_) ids.push_back(id);
  for (uint32_t id : ids) {
    if (Stream* s = Find(id)) EndStream(*s, true, "connection closed: " + why, false);
  }
  blocked_.clear();
  loop_.Unwatch(ep_->fd());
  if (graceful) {
    ep_->ShutdownWrite();  // close_notify if the socket takes it now; best effort
    ep_->Close();
  } else {
    ep_->Abort();
  }
  in_.Release();
  out_.Release();
  if (tick_ != 0) loop_.CancelTimer(tick_);
  if (stop_hook_ != 0) loop_.RemoveStopHook(stop_hook_);
  tick_ = stop_hook_ = 0;
  if (hooks_.on_closed) hooks_.on_closed(why);
  self_.reset();  // callers hold their own reference while inside a member
}

}  // namespace sigil::dataplane::mux
