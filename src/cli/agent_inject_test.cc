// InterceptCaKeeper on a real SyncedState and NodePolicy: the node-local CA files follow the
// synced inject Services that terminate TLS.
#include "cli/agent_inject.h"

#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <sstream>
#include <thread>

#include "resources/parse.h"

namespace sigil::cli {
namespace {

namespace fs = std::filesystem;

constexpr const char* kTlsService = R"(
apiVersion: sigil.dev/v1alpha1
kind: Service
metadata: {name: api-tls}
spec:
  mode: inject
  addresses: ["192.0.2.20:443", "api.test:443"]
  tls: {sni: api.test}
  inject: {terminateTls: true}
)";

std::shared_ptr<const dataplane::NodePolicy> PolicyOf(const std::string& yaml) {
  auto parsed = resources::ParseDocuments(yaml);
  EXPECT_TRUE(parsed.ok()) << parsed.error().ToString();
  dataplane::NodePolicy::Objects services;
  if (parsed.ok()) {
    for (const auto& r : *parsed) services.emplace_back(r.name, r.spec.dump());
  }
  return dataplane::NodePolicy::Build(services, {}, {});
}

bool WaitFor(const std::function<bool()>& done, std::chrono::milliseconds limit) {
  const auto deadline = std::chrono::steady_clock::now() + limit;
  while (!done()) {
    if (std::chrono::steady_clock::now() > deadline) return false;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  return true;
}

class InterceptCaKeeperTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::temp_directory_path() /
           ("sigil-keeper-test-" + std::to_string(::getpid()) + "-" +
            ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }

  std::string bundle() const { return (dir_ / "inject-ca-bundle.pem").string(); }
  std::string ca() const { return (dir_ / "inject-ca.pem").string(); }

  fs::path dir_;
  std::ostringstream log_text_;
  Logger log_{log_text_, LogFormat::kText};
  agent::SyncedState state_{*core::TrustDomain::Parse("example.org")};
};

// The agent starts its data plane while the first sync may still be arriving. A sync that
// lands after the keeper's first cover read the policy, but before its thread started
// watching, must still be followed (it used to wait for the minute's rotation check).
TEST_F(InterceptCaKeeperTest, FollowsASyncThatLandsDuringTheFirstCover) {
  std::atomic<int> calls{0};
  const auto with_tls = PolicyOf(kTlsService);
  InterceptCaKeeper keeper(
      state_,
      [&]() -> std::shared_ptr<const dataplane::NodePolicy> {
        if (calls.fetch_add(1) == 0) {
          state_.Touch();  // the sync arrives just after this read of the (empty) state
          return nullptr;
        }
        return with_tls;
      },
      dir_.string(), log_);
  ASSERT_TRUE(WaitFor([&] { return fs::exists(bundle()); }, std::chrono::seconds(5)))
      << "the keeper missed the change; log:\n"
      << log_text_.str();
  EXPECT_TRUE(fs::exists(ca()));
  EXPECT_EQ(keeper.ca()->names(), std::vector<std::string>{"api.test"});
  EXPECT_GE(calls.load(), 2);  // the first cover saw no Service; the thread covered again
}

// A Service that goes away takes the key and the files with it; Stop() drops them too.
TEST_F(InterceptCaKeeperTest, FilesFollowTheServicesAndGoAtStop) {
  std::atomic<bool> present{true};
  const auto with_tls = PolicyOf(kTlsService);
  InterceptCaKeeper keeper(
      state_,
      [&]() -> std::shared_ptr<const dataplane::NodePolicy> {
        return present.load() ? with_tls : nullptr;
      },
      dir_.string(), log_);
  ASSERT_TRUE(fs::exists(bundle()));  // written by the first cover, before the constructor returns
  present = false;
  state_.Touch();
  ASSERT_TRUE(
      WaitFor([&] { return !fs::exists(bundle()) && !fs::exists(ca()); }, std::chrono::seconds(5)));
  EXPECT_TRUE(keeper.ca()->names().empty());
  present = true;
  state_.Touch();
  ASSERT_TRUE(WaitFor([&] { return fs::exists(bundle()); }, std::chrono::seconds(5)));
  keeper.Stop();
  EXPECT_FALSE(fs::exists(bundle()));
  EXPECT_FALSE(fs::exists(ca()));
  EXPECT_NE(log_text_.str().find("dataplane.intercept_ca"), std::string::npos);
}

}  // namespace
}  // namespace sigil::cli
