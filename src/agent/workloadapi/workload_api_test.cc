// The Workload API end to end: a real WorkloadApiServer on a Unix socket in a temp dir, a
// TestSource over a real in-process CA, real gRPC clients. The test process itself is a client
// (uid 0 -> spiffe://example.org/root-workload); other uids are workloadapi_test_client
// processes started with fork + setresuid + exec (gRPC must not run in a forked copy of this
// process). Needs root, as CI runs it.
#include <fcntl.h>
#include <grp.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "agent/attest/attest.h"
#include "agent/workloadapi/explain_client.h"
#include "agent/workloadapi/testing/test_source.h"
#include "agent/workloadapi/workload_api.h"
#include "agent/workloadapi/workload_api_server.h"
#include "core/certificate.h"
#include "core/keys.h"
#include "core/trust_bundle.h"
#include "core/x509_svid.h"
#include "proto/sigil_workload_ext.grpc.pb.h"
#include "proto/workload.grpc.pb.h"

namespace sigil::agent::workloadapi {
namespace {

using namespace std::chrono_literals;
using testing::TestSource;

constexpr uid_t kNobody = 65534;
constexpr uid_t kStranger = 4242;  // no identity
const std::string kRootId = "spiffe://example.org/root-workload";
const std::string kNobodyId = "spiffe://example.org/nobody";

std::span<const uint8_t> Bytes(const std::string& s) {
  return {reinterpret_cast<const uint8_t*>(s.data()), s.size()};
}

// ---- a client process (workloadapi_test_client), optionally as another uid ----

std::map<std::string, std::string> ParseLine(const std::string& text) {
  std::map<std::string, std::string> kv;
  std::istringstream in(text.substr(0, text.find('\n')));
  std::string tok;
  while (in >> tok) {
    size_t eq = tok.find('=');
    if (eq != std::string::npos) kv[tok.substr(0, eq)] = tok.substr(eq + 1);
  }
  return kv;
}

std::map<std::string, std::string> RunClient(const std::string& socket,
                                             std::vector<std::string> args,
                                             std::optional<uid_t> uid = std::nullopt,
                                             pid_t* child_pid = nullptr) {
  std::vector<std::string> all = {SIGIL_WORKLOADAPI_TEST_CLIENT, socket};
  all.insert(all.end(), args.begin(), args.end());
  std::vector<char*> argv;
  for (auto& a : all) argv.push_back(a.data());
  argv.push_back(nullptr);
  int out[2];
  if (::pipe2(out, O_CLOEXEC) != 0) std::abort();
  pid_t pid = ::fork();
  if (pid == 0) {
    // Async-signal-safe calls only until exec.
    ::dup2(out[1], 1);
    if (uid && (::setgroups(0, nullptr) != 0 || ::setresgid(*uid, *uid, *uid) != 0 ||
                ::setresuid(*uid, *uid, *uid) != 0)) {
      _exit(126);
    }
    ::execv(argv[0], argv.data());
    _exit(127);
  }
  ::close(out[1]);
  if (child_pid != nullptr) *child_pid = pid;
  std::string text;
  char buf[4096];
  ssize_t n;
  while ((n = ::read(out[0], buf, sizeof(buf))) > 0) text.append(buf, static_cast<size_t>(n));
  ::close(out[0]);
  int status = 0;
  ::waitpid(pid, &status, 0);
  EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "client status " << status;
  auto kv = ParseLine(text);
  kv["raw"] = text;
  return kv;
}

std::string Code(grpc::StatusCode code) { return std::to_string(static_cast<int>(code)); }

// ---- in-process client helpers ----

void Header(grpc::ClientContext& ctx, std::chrono::milliseconds deadline = 20s) {
  ctx.AddMetadata("workload.spiffe.io", "true");
  ctx.set_deadline(std::chrono::system_clock::now() + deadline);
}

template <class Response>
struct Stream {
  std::unique_ptr<grpc::ClientContext> ctx = std::make_unique<grpc::ClientContext>();
  std::unique_ptr<grpc::ClientReader<Response>> reader;

  std::optional<Response> Next() {
    Response r;
    if (!reader->Read(&r)) return std::nullopt;
    return r;
  }
  grpc::Status Finish() { return reader->Finish(); }
};

class WorkloadApiTest : public ::testing::Test {
 protected:
  void SetUp() override {
    char tmpl[] = "/tmp/sigil-wl-test-XXXXXX";
    ASSERT_NE(::mkdtemp(tmpl), nullptr);
    dir_ = tmpl;
    ASSERT_EQ(::chmod(dir_.c_str(), 0755), 0);  // unprivileged clients must reach the socket
    socket_ = dir_ + "/agent.sock";
    source_ = TestSource::Create();
  }
  void TearDown() override {
    if (server_) server_->Stop();
    server_.reset();
    std::filesystem::remove_all(dir_);
  }

  // Streams re-check cancellation every stream_poll; tests that do not measure Stop use a short
  // one so that the handlers of cancelled streams return quickly at tear-down.
  static ServerOptions FastOptions() {
    ServerOptions options;
    options.service.stream_poll = 200ms;
    return options;
  }

  void StartServer(ServerOptions options = FastOptions()) {
    auto s = WorkloadApiServer::Start(socket_, *source_, attestor_, std::move(options));
    ASSERT_TRUE(s.ok()) << s.error().ToString();
    server_ = std::move(s).value();
  }

  std::shared_ptr<grpc::Channel> Channel() {
    grpc::ChannelArguments args;
    args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);
    return grpc::CreateCustomChannel("unix:" + socket_, grpc::InsecureChannelCredentials(), args);
  }
  std::unique_ptr<SpiffeWorkloadAPI::Stub> Stub() { return SpiffeWorkloadAPI::NewStub(Channel()); }

  Stream<X509SVIDResponse> OpenX509(SpiffeWorkloadAPI::Stub& stub, bool header = true) {
    Stream<X509SVIDResponse> s;
    if (header) Header(*s.ctx);
    s.reader = stub.FetchX509SVID(s.ctx.get(), X509SVIDRequest());
    return s;
  }
  Stream<X509BundlesResponse> OpenX509Bundles(SpiffeWorkloadAPI::Stub& stub, bool header = true) {
    Stream<X509BundlesResponse> s;
    if (header) Header(*s.ctx);
    s.reader = stub.FetchX509Bundles(s.ctx.get(), X509BundlesRequest());
    return s;
  }
  Stream<JWTBundlesResponse> OpenJwtBundles(SpiffeWorkloadAPI::Stub& stub, bool header = true) {
    Stream<JWTBundlesResponse> s;
    if (header) Header(*s.ctx);
    s.reader = stub.FetchJWTBundles(s.ctx.get(), JWTBundlesRequest());
    return s;
  }
  grpc::Status FetchJwt(SpiffeWorkloadAPI::Stub& stub, std::vector<std::string> audience,
                        JWTSVIDResponse* out, const std::string& spiffe_id = "") {
    grpc::ClientContext ctx;
    Header(ctx);
    JWTSVIDRequest req;
    for (auto& a : audience) req.add_audience(a);
    req.set_spiffe_id(spiffe_id);
    return stub.FetchJWTSVID(&ctx, req, out);
  }
  grpc::Status Validate(SpiffeWorkloadAPI::Stub& stub, const std::string& audience,
                        const std::string& token, ValidateJWTSVIDResponse* out) {
    grpc::ClientContext ctx;
    Header(ctx);
    ValidateJWTSVIDRequest req;
    req.set_audience(audience);
    req.set_svid(token);
    return stub.ValidateJWTSVID(&ctx, req, out);
  }

  std::string dir_;
  std::string socket_;
  attest::Attestor attestor_;
  std::unique_ptr<TestSource> source_;
  std::unique_ptr<WorkloadApiServer> server_;
};

// ---- security header ----

TEST_F(WorkloadApiTest, MissingHeaderIsInvalidArgumentOnEveryRpc) {
  StartServer();
  auto stub = Stub();
  auto check = [](const grpc::Status& s, const char* what) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << what;
    EXPECT_NE(s.error_message().find("security header missing"), std::string::npos)
        << what << ": " << s.error_message();
  };
  // No header at all.
  {
    auto s = OpenX509(*stub, false);
    EXPECT_FALSE(s.Next());
    check(s.Finish(), "FetchX509SVID");
  }
  {
    auto s = OpenX509Bundles(*stub, false);
    EXPECT_FALSE(s.Next());
    check(s.Finish(), "FetchX509Bundles");
  }
  {
    auto s = OpenJwtBundles(*stub, false);
    EXPECT_FALSE(s.Next());
    check(s.Finish(), "FetchJWTBundles");
  }
  {
    grpc::ClientContext ctx;
    JWTSVIDRequest req;
    req.add_audience("db");
    JWTSVIDResponse resp;
    check(stub->FetchJWTSVID(&ctx, req, &resp), "FetchJWTSVID");
  }
  {
    grpc::ClientContext ctx;
    ValidateJWTSVIDRequest req;
    req.set_audience("db");
    req.set_svid("x.y.z");
    ValidateJWTSVIDResponse resp;
    check(stub->ValidateJWTSVID(&ctx, req, &resp), "ValidateJWTSVID");
  }
  {
    auto info = sigil::workload::v1::WorkloadIdentityInfo::NewStub(Channel());
    grpc::ClientContext ctx;
    sigil::workload::v1::ExplainResponse resp;
    check(info->Explain(&ctx, {}, &resp), "Explain");
  }
  // Wrong value (case-sensitive) and a duplicated header are refused too.
  for (std::vector<std::string> values :
       {std::vector<std::string>{"True"}, {"false"}, {"true", "true"}}) {
    grpc::ClientContext ctx;
    for (const auto& v : values) ctx.AddMetadata("workload.spiffe.io", v);
    JWTSVIDRequest req;
    req.add_audience("db");
    JWTSVIDResponse resp;
    check(stub->FetchJWTSVID(&ctx, req, &resp), values[0].c_str());
  }
  // Nothing was attested or issued for any of these.
  EXPECT_EQ(source_->x509_calls(), 0);
}

// ---- X.509-SVIDs ----

TEST_F(WorkloadApiTest, RootCallerGetsAnSvidWhoseKeyMatchesAndChainsToTheBundle) {
  StartServer();
  auto stub = Stub();
  auto stream = OpenX509(*stub);
  auto first = stream.Next();
  ASSERT_TRUE(first) << stream.Finish().error_message();
  ASSERT_EQ(first->svids_size(), 1);
  const X509SVID& svid = first->svids(0);
  EXPECT_EQ(svid.spiffe_id(), kRootId);
  EXPECT_EQ(svid.hint(), "root-workload");
  EXPECT_TRUE(first->federated_bundles().empty());

  auto chain = core::ParseCertificatesDer(Bytes(svid.x509_svid()));
  ASSERT_TRUE(chain.ok()) << chain.error().ToString();
  ASSERT_FALSE(chain->empty());
  auto key = core::PrivateKey::FromPkcs8Der(Bytes(svid.x509_svid_key()));
  ASSERT_TRUE(key.ok()) << key.error().ToString();
  auto leaf_key = chain->front().PublicKeyOf();
  ASSERT_TRUE(leaf_key.ok());
  EXPECT_TRUE(key->Public().Equals(*leaf_key));

  auto roots = core::ParseCertificatesDer(Bytes(svid.bundle()));
  ASSERT_TRUE(roots.ok());
  auto bundle = std::make_shared<core::TrustBundle>(source_->trust_domain());
  for (auto& root : *roots) bundle->AddX509Authority(root);
  core::BundleSet bundles;
  bundles.Put(bundle);
  auto verified = core::VerifyX509Svid(*chain, bundles, Clock::System().Now());
  ASSERT_TRUE(verified.ok()) << verified.error().ToString();
  EXPECT_EQ(verified->str(), kRootId);
  // The bundle is exactly the source's X.509 authorities.
  auto expected = source_->Bundles().Find(source_->trust_domain())->X509AuthoritiesDer();
  EXPECT_EQ(svid.bundle(), std::string(expected.begin(), expected.end()));
  stream.ctx->TryCancel();
}

TEST_F(WorkloadApiTest, FederatedBundlesCarryOtherTrustDomains) {
  source_->AddFederatedDomain("other.org");
  StartServer();
  auto stub = Stub();
  auto stream = OpenX509(*stub);
  auto first = stream.Next();
  ASSERT_TRUE(first);
  ASSERT_EQ(first->federated_bundles_size(), 1);
  auto other =
      core::ParseCertificatesDer(Bytes(first->federated_bundles().at("spiffe://other.org")));
  ASSERT_TRUE(other.ok());
  EXPECT_EQ(other->size(), 1u);
  EXPECT_NE(first->svids(0).bundle(), first->federated_bundles().at("spiffe://other.org"));
  stream.ctx->TryCancel();
}

TEST_F(WorkloadApiTest, ChildAsNobodyGetsItsOwnIdentityWhileTheTestProcessGetsRoot) {
  StartServer();
  auto stub = Stub();
  auto stream = OpenX509(*stub);  // held open by the test process meanwhile
  auto mine = stream.Next();
  ASSERT_TRUE(mine);
  EXPECT_EQ(mine->svids(0).spiffe_id(), kRootId);

  pid_t child = 0;
  auto r = RunClient(socket_, {"x509"}, kNobody, &child);
  EXPECT_EQ(r["code"], "0") << r["raw"];
  EXPECT_EQ(r["uid"], std::to_string(kNobody));
  EXPECT_EQ(r["self"], std::to_string(child));
  EXPECT_EQ(r["id"], kNobodyId) << r["raw"];
  EXPECT_EQ(r["hint"], "nobody");

  auto jwt = RunClient(socket_, {"jwt", "db"}, kNobody);
  EXPECT_EQ(jwt["code"], "0") << jwt["raw"];
  EXPECT_EQ(jwt["id"], kNobodyId);

  // And a root child process is root-workload, like the test process.
  auto root = RunClient(socket_, {"x509"});
  EXPECT_EQ(root["id"], kRootId) << root["raw"];
  stream.ctx->TryCancel();
}

TEST_F(WorkloadApiTest, UidWithoutIdentityIsPermissionDenied) {
  StartServer();
  const std::string denied = Code(grpc::StatusCode::PERMISSION_DENIED);
  for (const char* rpc : {"x509", "x509bundles", "jwtbundles"}) {
    auto r = RunClient(socket_, {rpc}, kStranger);
    EXPECT_EQ(r["code"], denied) << rpc << ": " << r["raw"];
    EXPECT_EQ(r["msg"], "no_identity_issued") << rpc;
  }
  auto jwt = RunClient(socket_, {"jwt", "db"}, kStranger);
  EXPECT_EQ(jwt["code"], denied) << jwt["raw"];
  // Validation needs an attested caller, not an identity (as SPIRE).
  JWTSVIDResponse mine;
  auto stub = Stub();
  ASSERT_TRUE(FetchJwt(*stub, {"db"}, &mine).ok());
  auto validated = RunClient(socket_, {"validate", "db", mine.svids(0).svid()}, kStranger);
  EXPECT_EQ(validated["code"], "0") << validated["raw"];
  EXPECT_EQ(validated["id"], kRootId);
  // whoami explains that nothing matched instead of failing.
  auto explain = RunClient(socket_, {"explain"}, kStranger);
  EXPECT_EQ(explain["code"], "0") << explain["raw"];
  EXPECT_EQ(explain["xuid"], std::to_string(kStranger));
  EXPECT_EQ(explain["n"], "0");
}

TEST_F(WorkloadApiTest, AllowUnauthenticatedVerifiersServesBundlesOnly) {
  ServerOptions options = FastOptions();
  options.service.allow_unauthenticated_verifiers = true;
  StartServer(options);
  for (const char* rpc : {"x509bundles", "jwtbundles"}) {
    auto r = RunClient(socket_, {rpc}, kStranger);
    EXPECT_EQ(r["code"], "0") << rpc << ": " << r["raw"];
    EXPECT_EQ(r["tds"], "spiffe://example.org");
  }
  auto svid = RunClient(socket_, {"x509"}, kStranger);
  EXPECT_EQ(svid["code"], Code(grpc::StatusCode::PERMISSION_DENIED));
}

TEST_F(WorkloadApiTest, StreamDeliversTheRotatedSvidWithinOneSecond) {
  StartServer();
  auto stub = Stub();
  auto stream = OpenX509(*stub);
  auto first = stream.Next();
  ASSERT_TRUE(first);
  const auto start = std::chrono::steady_clock::now();
  source_->ForceRotation();
  auto second = stream.Next();
  const auto elapsed = std::chrono::steady_clock::now() - start;
  ASSERT_TRUE(second) << stream.Finish().error_message();
  EXPECT_LT(elapsed, 1s);
  EXPECT_EQ(second->svids(0).spiffe_id(), kRootId);
  EXPECT_NE(second->svids(0).x509_svid(), first->svids(0).x509_svid());
  EXPECT_NE(second->svids(0).x509_svid_key(), first->svids(0).x509_svid_key());
  auto chain = core::ParseCertificatesDer(Bytes(second->svids(0).x509_svid()));
  auto key = core::PrivateKey::FromPkcs8Der(Bytes(second->svids(0).x509_svid_key()));
  ASSERT_TRUE(chain.ok() && key.ok());
  EXPECT_TRUE(key->Public().Equals(*chain->front().PublicKeyOf()));
  stream.ctx->TryCancel();
}

TEST_F(WorkloadApiTest, GenerationMovesWithoutChangeSendNothing) {
  StartServer();
  auto stub = Stub();
  auto stream = OpenX509(*stub);
  auto first = stream.Next();
  ASSERT_TRUE(first);
  const int calls = source_->x509_calls();
  for (int i = 0; i < 3; ++i) {
    source_->Touch();
    std::this_thread::sleep_for(50ms);
  }
  EXPECT_GT(source_->x509_calls(), calls);  // recomputed...
  source_->ForceRotation();
  auto next = stream.Next();  // ...but the next message is the rotated SVID, not a duplicate
  ASSERT_TRUE(next);
  EXPECT_NE(next->svids(0).x509_svid(), first->svids(0).x509_svid());
  stream.ctx->TryCancel();
}

TEST_F(WorkloadApiTest, LosingTheLastIdentityEndsStreamsWithPermissionDenied) {
  StartServer();
  auto stub = Stub();
  auto svids = OpenX509(*stub);
  auto bundles = OpenX509Bundles(*stub);
  auto jwt_bundles = OpenJwtBundles(*stub);
  ASSERT_TRUE(svids.Next());
  ASSERT_TRUE(bundles.Next());
  ASSERT_TRUE(jwt_bundles.Next());
  const auto start = std::chrono::steady_clock::now();
  source_->UnmapUid(0);
  EXPECT_FALSE(svids.Next());
  EXPECT_FALSE(bundles.Next());
  EXPECT_FALSE(jwt_bundles.Next());
  EXPECT_LT(std::chrono::steady_clock::now() - start, 1s);
  for (grpc::Status s : {svids.Finish(), bundles.Finish(), jwt_bundles.Finish()}) {
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED) << s.error_message();
    EXPECT_EQ(s.error_message(), "no identity issued");
  }
}

// ---- bundles ----

TEST_F(WorkloadApiTest, X509BundlesStreamResendsOnChange) {
  StartServer();
  auto stub = Stub();
  auto stream = OpenX509Bundles(*stub);
  auto first = stream.Next();
  ASSERT_TRUE(first);
  ASSERT_EQ(first->bundles_size(), 1);
  auto expected = source_->Bundles().Find(source_->trust_domain())->X509AuthoritiesDer();
  EXPECT_EQ(first->bundles().at("spiffe://example.org"),
            std::string(expected.begin(), expected.end()));

  source_->RotateBundle();
  auto second = stream.Next();
  ASSERT_TRUE(second);
  auto certs = core::ParseCertificatesDer(Bytes(second->bundles().at("spiffe://example.org")));
  ASSERT_TRUE(certs.ok());
  EXPECT_EQ(certs->size(), 2u);

  source_->Touch();  // nothing changed: nothing sent; the federated domain comes next
  source_->AddFederatedDomain("other.org");
  auto third = stream.Next();
  ASSERT_TRUE(third);
  EXPECT_EQ(third->bundles_size(), 2);
  EXPECT_TRUE(third->bundles().contains("spiffe://other.org"));
  EXPECT_EQ(third->bundles().at("spiffe://example.org"),
            second->bundles().at("spiffe://example.org"));
  stream.ctx->TryCancel();
}

TEST_F(WorkloadApiTest, JwtBundlesStreamHasOnlyJwtKeysWithKids) {
  StartServer();
  auto stub = Stub();
  auto stream = OpenJwtBundles(*stub);
  auto first = stream.Next();
  ASSERT_TRUE(first);
  ASSERT_EQ(first->bundles_size(), 1);
  auto jwks = nlohmann::json::parse(first->bundles().at("spiffe://example.org"));
  ASSERT_TRUE(jwks.contains("keys"));
  ASSERT_EQ(jwks["keys"].size(), 1u);
  const core::BundleSet bundles = source_->Bundles();
  const auto own = bundles.Find(source_->trust_domain());
  ASSERT_NE(own, nullptr);
  EXPECT_EQ(jwks["keys"][0]["kid"], own->jwt_authorities().at(0).kid);
  for (const auto& key : jwks["keys"]) {
    EXPECT_EQ(key["use"], "jwt-svid");
    EXPECT_FALSE(key.value("kid", "").empty());
    EXPECT_FALSE(key.contains("x5c"));
  }
  // A JWT bundle a client builds from it validates our tokens.
  auto parsed = core::TrustBundle::ParseJwks(source_->trust_domain(),
                                             first->bundles().at("spiffe://example.org"));
  ASSERT_TRUE(parsed.ok()) << parsed.error().ToString();
  EXPECT_TRUE(parsed->x509_authorities().empty());

  source_->RotateBundle();
  auto second = stream.Next();
  ASSERT_TRUE(second);
  EXPECT_EQ(nlohmann::json::parse(second->bundles().at("spiffe://example.org"))["keys"].size(), 2u);
  stream.ctx->TryCancel();
}

// ---- JWT-SVIDs ----

TEST_F(WorkloadApiTest, JwtFetchAndValidateRoundTrip) {
  StartServer();
  auto stub = Stub();
  JWTSVIDResponse fetched;
  grpc::Status s = FetchJwt(*stub, {"db"}, &fetched);
  ASSERT_TRUE(s.ok()) << s.error_message();
  ASSERT_EQ(fetched.svids_size(), 1);
  EXPECT_EQ(fetched.svids(0).spiffe_id(), kRootId);
  EXPECT_EQ(fetched.svids(0).hint(), "root-workload");

  ValidateJWTSVIDResponse validated;
  s = Validate(*stub, "db", fetched.svids(0).svid(), &validated);
  ASSERT_TRUE(s.ok()) << s.error_message();
  EXPECT_EQ(validated.spiffe_id(), kRootId);
  const auto& claims = validated.claims().fields();
  EXPECT_EQ(claims.at("sub").string_value(), kRootId);
  ASSERT_TRUE(claims.at("aud").has_list_value());
  ASSERT_EQ(claims.at("aud").list_value().values_size(), 1);
  EXPECT_EQ(claims.at("aud").list_value().values(0).string_value(), "db");
  ASSERT_EQ(claims.at("exp").kind_case(), google::protobuf::Value::kNumberValue);
  EXPECT_GT(claims.at("exp").number_value(),
            static_cast<double>(ToUnixSeconds(Clock::System().Now())));

  // The same token for another audience, a tampered token and garbage: INVALID_ARGUMENT, and
  // the message never echoes the token.
  const std::string token = fetched.svids(0).svid();
  std::string tampered = token;
  tampered[tampered.size() - 5] = tampered[tampered.size() - 5] == 'A' ? 'B' : 'A';
  for (auto [aud, svid] : std::vector<std::pair<std::string, std::string>>{
           {"web", token}, {"db", tampered}, {"db", "not.a.jwt"}}) {
    ValidateJWTSVIDResponse r;
    s = Validate(*stub, aud, svid, &r);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << aud;
    EXPECT_EQ(s.error_message().find(token.substr(0, 20)), std::string::npos);
  }
}

TEST_F(WorkloadApiTest, JwtRequestArguments) {
  StartServer();
  auto stub = Stub();
  JWTSVIDResponse r;
  grpc::Status s = FetchJwt(*stub, {}, &r);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "audience must be specified");
  EXPECT_EQ(FetchJwt(*stub, {""}, &r).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(FetchJwt(*stub, std::vector<std::string>(17, "a"), &r).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(FetchJwt(*stub, {std::string(1025, 'a')}, &r).error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(FetchJwt(*stub, {"db"}, &r, "not-an-id").error_code(),
            grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(FetchJwt(*stub, {"db"}, &r, kNobodyId).error_code(),
            grpc::StatusCode::PERMISSION_DENIED);
  JWTSVIDResponse two;
  ASSERT_TRUE(FetchJwt(*stub, {"db", "web"}, &two, kRootId).ok());
  ASSERT_EQ(two.svids_size(), 1);
  ValidateJWTSVIDResponse v;
  ASSERT_TRUE(Validate(*stub, "web", two.svids(0).svid(), &v).ok());

  s = Validate(*stub, "", two.svids(0).svid(), &v);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "audience must be specified");
  s = Validate(*stub, "db", "", &v);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(s.error_message(), "svid must be specified");
}

// ---- whoami extension ----

TEST_F(WorkloadApiTest, ExplainDescribesTheCaller) {
  StartServer();
  auto r = ExplainViaSocket(socket_);
  ASSERT_TRUE(r.ok()) << r.error().ToString();
  EXPECT_EQ(r->pid, ::getpid());
  EXPECT_EQ(r->uid, 0u);
  EXPECT_EQ(r->exe_path, std::filesystem::read_symlink("/proc/self/exe").string());
  EXPECT_EQ(r->exe_sha256.size(), 64u);
  EXPECT_EQ(r->pidfd_source, "caller");
  EXPECT_NE(std::find(r->selectors.begin(), r->selectors.end(), "unix:uid:0"), r->selectors.end());
  ASSERT_EQ(r->identities.size(), 1u);
  EXPECT_EQ(r->identities[0].spiffe_id, kRootId);
  EXPECT_EQ(r->identities[0].workload_identity, "root-workload");
  EXPECT_EQ(r->identities[0].selectors, std::vector<std::string>{"unix:uid:0"});
  EXPECT_EQ(source_->issued_count(), 0);  // explaining issues nothing

  auto nobody = RunClient(socket_, {"explain"}, kNobody);
  EXPECT_EQ(nobody["code"], "0") << nobody["raw"];
  EXPECT_EQ(nobody["xuid"], std::to_string(kNobody));
  EXPECT_EQ(nobody["id"], kNobodyId);
  EXPECT_EQ(nobody["name"], "nobody");
}

TEST_F(WorkloadApiTest, ExplainWithoutAgentIsUnavailable) {
  auto r = ExplainViaSocket(dir_ + "/nothing.sock", 2s);
  ASSERT_FALSE(r.ok());
  EXPECT_EQ(r.error().code(), ErrorCode::kUnavailable) << r.error().ToString();
  EXPECT_NE(r.error().message().find("nothing.sock"), std::string::npos);
}

// ---- lifecycle ----

TEST_F(WorkloadApiTest, StopWithOpenStreamsReturnsPromptly) {
  StartServer(ServerOptions{});  // the default stream_poll
  auto stub = Stub();
  auto svids = OpenX509(*stub);
  auto bundles = OpenX509Bundles(*stub);
  auto jwt_bundles = OpenJwtBundles(*stub);
  auto other_stub = Stub();
  auto svids2 = OpenX509(*other_stub);
  ASSERT_TRUE(svids.Next());
  ASSERT_TRUE(bundles.Next());
  ASSERT_TRUE(jwt_bundles.Next());
  ASSERT_TRUE(svids2.Next());
  const auto start = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 2s);
  EXPECT_FALSE(svids.Next());
  EXPECT_FALSE(bundles.Next());
  EXPECT_FALSE(jwt_bundles.Next());
  EXPECT_FALSE(svids2.Next());
  for (grpc::Status s : {svids.Finish(), bundles.Finish(), jwt_bundles.Finish(), svids2.Finish()}) {
    EXPECT_FALSE(s.ok());
  }
  EXPECT_FALSE(std::filesystem::exists(socket_));
  server_->Stop();  // idempotent
}

TEST_F(WorkloadApiTest, SourceShutdownEndsStreamsUnavailable) {
  StartServer();
  auto stub = Stub();
  auto svids = OpenX509(*stub);
  ASSERT_TRUE(svids.Next());
  source_->Shutdown();
  EXPECT_FALSE(svids.Next());
  grpc::Status s = svids.Finish();
  EXPECT_EQ(s.error_code(), grpc::StatusCode::UNAVAILABLE) << s.error_message();
  JWTSVIDResponse r;
  EXPECT_EQ(FetchJwt(*stub, {"db"}, &r).error_code(), grpc::StatusCode::UNAVAILABLE);
}

TEST_F(WorkloadApiTest, ClientCancelEndsTheHandler) {
  StartServer();  // stream_poll 200 ms
  auto stub = Stub();
  auto svids = OpenX509(*stub);
  ASSERT_TRUE(svids.Next());
  svids.ctx->TryCancel();
  EXPECT_EQ(svids.Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The handler returned: Stop does not wait for it.
  std::this_thread::sleep_for(300ms);
  const auto start = std::chrono::steady_clock::now();
  server_->Stop();
  EXPECT_LT(std::chrono::steady_clock::now() - start, 500ms);
}

// Every open stream holds a gRPC handler thread; beyond max_threads calls are refused
// (RESOURCE_EXHAUSTED) instead of piling up threads, and capacity returns once streams end.
TEST_F(WorkloadApiTest, ThreadBoundRefusesExtraStreams) {
  ServerOptions options = FastOptions();
  options.max_threads = 6;  // includes gRPC's own polling threads
  StartServer(options);
  auto stub = Stub();
  std::vector<Stream<X509SVIDResponse>> open;
  std::optional<grpc::Status> refused;
  for (int i = 0; i < 12 && !refused; ++i) {
    auto s = OpenX509(*stub);
    if (s.Next()) {
      open.push_back(std::move(s));
    } else {
      refused = s.Finish();
    }
  }
  ASSERT_FALSE(open.empty());
  ASSERT_TRUE(refused.has_value());
  EXPECT_EQ(refused->error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  for (auto& s : open) s.ctx->TryCancel();
  bool served = false;
  for (int i = 0; i < 40 && !served; ++i) {
    std::this_thread::sleep_for(50ms);
    auto s = OpenX509(*stub);
    served = s.Next().has_value();
    s.ctx->TryCancel();
  }
  EXPECT_TRUE(served);
}

TEST_F(WorkloadApiTest, SocketModeAndParentDirectory) {
  socket_ = dir_ + "/run/sigil/agent.sock";
  StartServer();
  struct stat st {};
  ASSERT_EQ(::stat(socket_.c_str(), &st), 0);
  EXPECT_TRUE(S_ISSOCK(st.st_mode));
  EXPECT_EQ(st.st_mode & 07777, 0666u);
  ASSERT_EQ(::stat((dir_ + "/run/sigil").c_str(), &st), 0);
  EXPECT_EQ(st.st_mode & 07777, 0755u);
  auto r = RunClient(socket_, {"x509"}, kNobody);  // reachable by another uid
  EXPECT_EQ(r["id"], kNobodyId) << r["raw"];
}

TEST_F(WorkloadApiTest, StartErrors) {
  auto relative = WorkloadApiServer::Start("agent.sock", *source_, attestor_);
  EXPECT_FALSE(relative.ok());
  StartServer();
  auto again = WorkloadApiServer::Start(socket_, *source_, attestor_);
  ASSERT_FALSE(again.ok());
  EXPECT_EQ(again.error().code(), ErrorCode::kAlreadyExists) << again.error().ToString();
  // The first server still serves.
  EXPECT_TRUE(ExplainViaSocket(socket_).ok());
}

// A call that did not come through a PeerListener (here: gRPC's in-process channel) has no peer
// credentials and is refused, never attested by pid or served by default.
TEST(WorkloadApiServiceTest, CallerWithoutPeerIsPermissionDenied) {
  auto source = TestSource::Create();
  attest::Attestor attestor;
  WorkloadApiService service(*source, static_cast<const peer::PeerListener*>(nullptr), attestor);
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = SpiffeWorkloadAPI::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  grpc::ClientContext ctx;
  Header(ctx);
  JWTSVIDRequest req;
  req.add_audience("db");
  JWTSVIDResponse resp;
  grpc::Status s = stub->FetchJWTSVID(&ctx, req, &resp);
  EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED);
  EXPECT_NE(s.error_message().find("not identified"), std::string::npos) << s.error_message();

  Stream<X509SVIDResponse> stream;
  Header(*stream.ctx);
  stream.reader = stub->FetchX509SVID(stream.ctx.get(), X509SVIDRequest());
  EXPECT_FALSE(stream.Next());
  EXPECT_EQ(stream.Finish().error_code(), grpc::StatusCode::PERMISSION_DENIED);
  server->Shutdown();
  server->Wait();
}

// Attestation goes through the connection's pidfd: when the process behind it is gone the call
// is refused, even if a live process now has (or is given) the peer's pid number.
TEST(WorkloadApiServiceTest, ExitedPeerIsPermissionDeniedNeverAttestedByPid) {
  int block[2];
  ASSERT_EQ(::pipe2(block, O_CLOEXEC), 0);
  pid_t child = ::fork();
  if (child == 0) {
    ::close(block[1]);
    char c;
    (void)!::read(block[0], &c, 1);
    _exit(0);
  }
  ::close(block[0]);
  int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, child, 0));
  ASSERT_GE(pidfd, 0);
  ::close(block[1]);                               // the child exits...
  ASSERT_EQ(::waitpid(child, nullptr, 0), child);  // ...and is reaped: its pid is free for reuse
  auto dead = std::make_shared<const peer::OwnedFd>(pidfd);

  auto source = TestSource::Create();
  attest::Attestor attestor;
  std::atomic<pid_t> claimed_pid{child};
  PeerLookup lookup = [&](const grpc::ServerContext&) -> std::optional<peer::PeerInfo> {
    peer::PeerInfo info;
    info.pid = claimed_pid.load();
    info.pidfd = dead;
    info.pidfd_from_socket = true;
    return info;
  };
  WorkloadApiService service(*source, lookup, attestor);
  grpc::ServerBuilder builder;
  builder.RegisterService(&service);
  auto server = builder.BuildAndStart();
  ASSERT_NE(server, nullptr);
  auto stub = SpiffeWorkloadAPI::NewStub(server->InProcessChannel(grpc::ChannelArguments()));
  // The pid of a live uid-0 process (ours) with the dead process's pidfd: still refused.
  for (pid_t pid : {child, ::getpid()}) {
    claimed_pid.store(pid);
    grpc::ClientContext ctx;
    Header(ctx);
    JWTSVIDRequest req;
    req.add_audience("db");
    JWTSVIDResponse resp;
    grpc::Status s = stub->FetchJWTSVID(&ctx, req, &resp);
    EXPECT_EQ(s.error_code(), grpc::StatusCode::PERMISSION_DENIED)
        << pid << ": " << s.error_message();
    EXPECT_NE(s.error_message().find("attestation failed"), std::string::npos) << s.error_message();
    EXPECT_EQ(resp.svids_size(), 0);
  }
  server->Shutdown();
  server->Wait();
}

}  // namespace
}  // namespace sigil::agent::workloadapi
