// Test-only client for peer_listener_test.cc, run as a separate (exec'd) process: gRPC must
// not be used in a forked copy of the test process, and the test needs distinct pids/uids.
//
//   test_client SOCKET once            one call; prints the reply
//   test_client SOCKET cycles N        N x (new channel = new connection, one call, close);
//                                      prints "ok=<n> bad=<n>" where bad = wrong attribution
//   test_client SOCKET hold MS         one call whose handler runs MS milliseconds
// Reply lines: "self=<getpid> uid=<getuid> found=.. pid=.. uid_seen=.. gid_seen=.. pidfd_pid=..
// from_socket=.. conn=.. peer=.. status=<grpc code>".
#include <grpcpp/grpcpp.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <string>

#include "peer_test.grpc.pb.h"

namespace {

using sigil::peer::test::PeerEcho;
using sigil::peer::test::WhoReply;
using sigil::peer::test::WhoRequest;

std::shared_ptr<grpc::Channel> NewChannel(const std::string& socket) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // a connection of its own
  return grpc::CreateCustomChannel("unix:" + socket, grpc::InsecureChannelCredentials(), args);
}

grpc::Status Call(const std::string& socket, int hold_ms, WhoReply* reply) {
  auto stub = PeerEcho::NewStub(NewChannel(socket));
  grpc::ClientContext ctx;
  ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(20));
  WhoRequest req;
  req.set_hold_ms(hold_ms);
  return stub->Who(&ctx, req, reply);
}

void Print(const WhoReply& r, const grpc::Status& s) {
  std::printf(
      "self=%d uid=%d found=%d pid=%lld uid_seen=%lld gid_seen=%lld pidfd_pid=%lld "
      "from_socket=%d conn=%llu peer=%s status=%d\n",
      static_cast<int>(::getpid()), static_cast<int>(::getuid()), r.found() ? 1 : 0,
      static_cast<long long>(r.pid()), static_cast<long long>(r.uid()),
      static_cast<long long>(r.gid()), static_cast<long long>(r.pidfd_pid()),
      r.pidfd_from_socket() ? 1 : 0, static_cast<unsigned long long>(r.connection_id()),
      r.peer().c_str(), static_cast<int>(s.error_code()));
  std::fflush(stdout);
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) return 2;
  std::string socket = argv[1];
  std::string mode = argv[2];
  if (mode == "once" || mode == "hold") {
    int hold = mode == "hold" && argc > 3 ? std::atoi(argv[3]) : 0;
    WhoReply reply;
    grpc::Status s = Call(socket, hold, &reply);
    Print(reply, s);
    return s.ok() ? 0 : 1;
  }
  if (mode == "cycles" && argc > 3) {
    int n = std::atoi(argv[3]);
    int ok = 0;
    int bad = 0;
    unsigned long long last_conn = 0;
    for (int i = 0; i < n; ++i) {
      WhoReply reply;
      grpc::Status s = Call(socket, 0, &reply);
      // Every cycle must be a new connection attributed to this very process.
      if (s.ok() && reply.found() && reply.pid() == ::getpid() && reply.uid() == ::getuid() &&
          reply.pidfd_pid() == ::getpid() && reply.connection_id() != last_conn) {
        ++ok;
      } else {
        ++bad;
        Print(reply, s);
      }
      last_conn = reply.connection_id();
    }
    std::printf("ok=%d bad=%d\n", ok, bad);
    std::fflush(stdout);
    return bad == 0 ? 0 : 1;
  }
  return 2;
}
