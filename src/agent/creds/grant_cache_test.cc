// GrantCache: hits, expiry, Sync invalidation, refusals, single flight, and secret custody
// (the secure heap, wiped when the last holder lets go) in a hardened child.
#include "agent/creds/grant_cache.h"

#include <gtest/gtest.h>
#include <openssl/crypto.h>

#include <atomic>
#include <future>
#include <thread>

#include "agent/custody/harden.h"
#include "agent/custody/testing/child.h"
#include "agent/custody/testing/memscan.h"

namespace sigil::agent::creds {
namespace {

namespace pb = sigil::agent::v1;
using custody::testing::AddressRange;
using custody::testing::ChildChecks;
using custody::testing::RunInChild;

const TimePoint kStart = FromUnixSeconds(1'700'000'000);
constexpr char kId[] = "spiffe://example.org/ml/trainer";
constexpr char kOtherId[] = "spiffe://example.org/ml/other";

std::shared_ptr<const CredentialGrant> MakeGrant(const std::string& binding, const std::string& id,
                                                 TimePoint fetched, std::chrono::seconds ttl,
                                                 const std::string& source = "openai-key",
                                                 std::string_view secret = "sk-test-secret") {
  GrantInfo info;
  info.binding = binding;
  info.source = source;
  info.source_type = "static";
  info.spiffe_id = id;
  info.fetched_at = fetched;
  info.expires_at = fetched + ttl;
  return std::make_shared<const CredentialGrant>(
      std::move(info), SecretBytes::Copy(secret),
      std::vector<std::pair<std::string, SecretBytes>>{});
}

// A fetch function counting its calls, answering a fresh grant each time.
struct Server {
  explicit Server(FakeClock& c) : clock(c) {}
  FakeClock& clock;
  std::string id = kId;
  std::string source = "openai-key";
  std::chrono::seconds ttl{300};
  std::atomic<int> calls{0};
  std::function<void()> during;  // runs inside the fetch (to race an invalidation)

  GrantCache::FetchFn For(const std::string& binding) {
    return [this, binding]() -> Result<std::shared_ptr<const CredentialGrant>> {
      ++calls;
      if (during) during();
      return MakeGrant(binding, id, clock.Now(), ttl, source);
    };
  }
};

std::string SecretOf(const CredentialGrantHandle& h) {
  return h.WithSecret([](const SecretParts& s) { return std::string(s.secret()); });
}

TEST(GrantCache, DropIfRemovesTheRevokedBindingsAndIdentitiesOnly) {
  FakeClock clock(kStart);
  GrantCache cache(clock);
  Server server{clock};
  ASSERT_TRUE(cache.Get("ml-openai", {kId}, server.For("ml-openai")).ok());
  ASSERT_TRUE(cache.Get("ml-aws", {kId}, server.For("ml-aws")).ok());
  server.id = kOtherId;
  ASSERT_TRUE(cache.Get("ml-s3", {kOtherId}, server.For("ml-s3")).ok());
  ASSERT_EQ(cache.size(), 3u);
  // A revoked binding, and a revoked identity: two grants go, the third stays.
  const size_t dropped = cache.DropIf([](const std::string& binding, const std::string& id) {
    return binding == "ml-openai" || id == kOtherId;
  });
  EXPECT_EQ(dropped, 2u);
  EXPECT_EQ(cache.size(), 1u);
  const int calls = server.calls.load();
  server.id = kId;
  ASSERT_TRUE(cache.Get("ml-aws", {kId}, server.For("ml-aws")).ok());
  EXPECT_EQ(server.calls.load(), calls) << "the grant that was not revoked was fetched again";
  ASSERT_TRUE(cache.Get("ml-openai", {kId}, server.For("ml-openai")).ok());
  EXPECT_EQ(server.calls.load(), calls + 1) << "a revoked binding's grant was served from cache";
}

TEST(GrantCache, SecondCallIsServedFromTheCache) {
  FakeClock clock(kStart);
  GrantCache cache(clock);
  Server server{clock};
  auto first = cache.Get("ml-openai", {kId}, server.For("ml-openai"));
  ASSERT_TRUE(first.ok()) << first.error().ToString();
  EXPECT_TRUE(first->server_audited());
  EXPECT_EQ(first->info().spiffe_id, kId);
  EXPECT_EQ(SecretOf(*first), "sk-test-secret");
  auto second = cache.Get("ml-openai", {kOtherId, kId}, server.For("ml-openai"));
  ASSERT_TRUE(second.ok());
  EXPECT_FALSE(second->server_audited()) << "a cache hit was reported as audited by the server";
  EXPECT_EQ(server.calls.load(), 1);
  EXPECT_EQ(cache.size(), 1u);
  // Another binding, or a process that does not hold the identity: not this entry.
  ASSERT_TRUE(cache.Get("other", {kId}, server.For("other")).ok());
  ASSERT_TRUE(cache.Get("ml-openai", {kOtherId}, server.For("ml-openai")).ok());
  EXPECT_EQ(server.calls.load(), 3);
}

TEST(GrantCache, ExpiryWithRefreshMarginAndMaxAge) {
  FakeClock clock(kStart);
  GrantCache cache(clock);  // max_age 300 s, margin 30 s
  Server server{clock};
  server.ttl = std::chrono::seconds(300);
  ASSERT_TRUE(cache.Get("b", {kId}, server.For("b")).ok());
  // Usable until expires_at - 30 s = +270 s.
  clock.Advance(std::chrono::seconds(269));
  ASSERT_TRUE(cache.Get("b", {kId}, server.For("b")).ok());
  EXPECT_EQ(server.calls.load(), 1);
  clock.Advance(std::chrono::seconds(1));
  ASSERT_TRUE(cache.Get("b", {kId}, server.For("b")).ok());
  EXPECT_EQ(server.calls.load(), 2) << "a grant was served past its usable time";

  // A long-lived grant (a 2 h JWT) is still dropped after max_age.
  FakeClock clock2(kStart);
  GrantCache cache2(clock2);
  Server long_lived{clock2};
  long_lived.ttl = std::chrono::seconds(7200);
  ASSERT_TRUE(cache2.Get("b", {kId}, long_lived.For("b")).ok());
  clock2.Advance(std::chrono::seconds(299));
  ASSERT_TRUE(cache2.Get("b", {kId}, long_lived.For("b")).ok());
  EXPECT_EQ(long_lived.calls.load(), 1);
  clock2.Advance(std::chrono::seconds(1));
  ASSERT_TRUE(cache2.Get("b", {kId}, long_lived.For("b")).ok());
  EXPECT_EQ(long_lived.calls.load(), 2);

  // A short one (60 s): served for half its life at most.
  FakeClock clock3(kStart);
  GrantCache cache3(clock3);
  Server short_lived{clock3};
  short_lived.ttl = std::chrono::seconds(60);
  ASSERT_TRUE(cache3.Get("b", {kId}, short_lived.For("b")).ok());
  EXPECT_EQ(cache3.UsableUntil(MakeGrant("b", kId, kStart, std::chrono::seconds(60))->info()),
            kStart + std::chrono::seconds(30));
  clock3.Advance(std::chrono::seconds(30));
  ASSERT_TRUE(cache3.Get("b", {kId}, short_lived.For("b")).ok());
  EXPECT_EQ(short_lived.calls.load(), 2);
}

TEST(GrantCache, SweepDropsExpiredEntries) {
  FakeClock clock(kStart);
  GrantCache cache(clock);
  Server server{clock};
  ASSERT_TRUE(cache.Get("a", {kId}, server.For("a")).ok());
  server.ttl = std::chrono::seconds(100);
  ASSERT_TRUE(cache.Get("b", {kId}, server.For("b")).ok());
  EXPECT_EQ(cache.size(), 2u);
  EXPECT_EQ(cache.Sweep(), 0u);
  clock.Advance(std::chrono::seconds(71));  // b usable until +70 s, a until +270 s
  EXPECT_EQ(cache.Sweep(), 1u);
  EXPECT_EQ(cache.size(), 1u);
  clock.Advance(std::chrono::seconds(200));
  EXPECT_EQ(cache.Sweep(), 1u);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(GrantCache, SyncChangesDropTheGrantsInvolved) {
  FakeClock clock(kStart);
  GrantCache cache(clock);
  Server openai{clock};
  Server aws{clock};
  aws.source = "aws-prod";
  auto fill = [&] {
    ASSERT_TRUE(cache.Get("ml-openai", {kId}, openai.For("ml-openai")).ok());
    ASSERT_TRUE(cache.Get("ml-openai-file", {kId}, openai.For("ml-openai-file")).ok());
    ASSERT_TRUE(cache.Get("backup-s3", {kId}, aws.For("backup-s3")).ok());
  };
  fill();
  ASSERT_EQ(cache.size(), 3u);

  pb::SyncResponse delta;  // an unrelated change
  delta.add_upserts()->set_kind("WorkloadIdentity");
  delta.mutable_upserts(0)->set_name("ml-openai");
  cache.OnSync(delta);
  EXPECT_EQ(cache.size(), 3u) << "a WorkloadIdentity of the same name dropped grants";

  pb::SyncResponse rotated;  // `sigil credential rotate openai-key`
  rotated.add_changed_credential_sources("openai-key");
  cache.OnSync(rotated);
  EXPECT_EQ(cache.size(), 1u) << "both bindings of openai-key must be dropped, aws kept";
  fill();
  EXPECT_EQ(openai.calls.load(), 4);
  EXPECT_EQ(aws.calls.load(), 1);

  pb::SyncResponse binding_changed;
  auto* u = binding_changed.add_upserts();
  u->set_kind("CredentialBinding");
  u->set_name("backup-s3");
  cache.OnSync(binding_changed);
  EXPECT_EQ(cache.size(), 2u);

  pb::SyncResponse binding_deleted;
  auto* d = binding_deleted.add_deletes();
  d->set_kind("CredentialBinding");
  d->set_name("ml-openai");
  cache.OnSync(binding_deleted);
  EXPECT_EQ(cache.size(), 1u);

  pb::SyncResponse snapshot;
  snapshot.set_snapshot(true);
  cache.OnSync(snapshot);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(GrantCache, RefusalsAndForeignIdentitiesAreNotCached) {
  FakeClock clock(kStart);
  GrantCache cache(clock);
  int refusals = 0;
  auto refuse = [&]() -> Result<std::shared_ptr<const CredentialGrant>> {
    ++refusals;
    return PermissionDenied("credential binding \"b\" denied");
  };
  for (int i = 0; i < 3; ++i) {
    auto r = cache.Get("b", {kId}, refuse);
    ASSERT_FALSE(r.ok());
    EXPECT_EQ(r.error().code(), ErrorCode::kPermissionDenied);
  }
  EXPECT_EQ(refusals, 3) << "a refusal was cached (the server must see every attempt)";
  // No identity allowed by the agent's view: always asked, never cached.
  Server server{clock};
  ASSERT_TRUE(cache.Get("b", {}, server.For("b")).ok());
  ASSERT_TRUE(cache.Get("b", {}, server.For("b")).ok());
  EXPECT_EQ(server.calls.load(), 2);
  // The server granted for an identity the agent did not match: returned, not cached.
  server.id = kOtherId;
  auto r = cache.Get("b", {kId}, server.For("b"));
  ASSERT_TRUE(r.ok());
  EXPECT_EQ(r->info().spiffe_id, kOtherId);
  EXPECT_EQ(cache.size(), 0u);
}

TEST(GrantCache, InvalidationDuringAFetchIsNotCachedOver) {
  FakeClock clock(kStart);
  GrantCache cache(clock);
  Server server{clock};
  server.during = [&] { cache.DropSource("openai-key"); };  // rotation commits meanwhile
  auto r = cache.Get("b", {kId}, server.For("b"));
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->server_audited());
  EXPECT_EQ(cache.size(), 0u) << "a grant fetched across an invalidation was cached";
  server.during = nullptr;
  ASSERT_TRUE(cache.Get("b", {kId}, server.For("b")).ok());
  EXPECT_EQ(cache.size(), 1u);
}

TEST(GrantCache, ConcurrentMissesShareOneFetch) {
  FakeClock clock(kStart);
  GrantCache cache(clock);
  Server server{clock};
  std::promise<void> release;
  std::shared_future<void> released = release.get_future().share();
  std::atomic<int> entered{0};
  auto slow = [&]() -> Result<std::shared_ptr<const CredentialGrant>> {
    ++entered;
    released.wait();
    return server.For("b")();
  };
  constexpr int kThreads = 8;
  std::vector<std::thread> threads;
  std::atomic<int> ok{0};
  for (int i = 0; i < kThreads; ++i) {
    threads.emplace_back([&] {
      if (cache.Get("b", {kId}, slow).ok()) ++ok;
    });
  }
  // Bounded wait for the leader to be inside the fetch.
  for (int i = 0; i < 500 && entered.load() == 0; ++i) {
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(50));
  release.set_value();
  for (auto& t : threads) t.join();
  EXPECT_EQ(ok.load(), kThreads);
  EXPECT_EQ(entered.load(), 1) << "concurrent misses each asked the server";
}

// The secret parts live in the secure heap only: GrantFromResponse wipes the protobuf copies,
// nothing else holds them outside the arena, and once the cache dropped the grant and the last
// handle is gone the arena holds no trace either.
TEST(GrantCache, SecretsLiveInTheSecureHeapAndAreWipedWhenDropped) {
  EXPECT_EQ(
      RunInChild([](ChildChecks& c) {
        if (!CHILD_CHECK(c, custody::HardenProcess().ok())) return;
        void* probe = OPENSSL_secure_malloc(1);
        const AddressRange arena = custody::testing::MappingOf(probe);
        OPENSSL_secure_free(probe);
        if (!CHILD_CHECK(c, arena.end > arena.start)) return;
        // Needles in the arena themselves, generated there (never in a std::string).
        SecretBytes secret(48), token(48);
        for (size_t i = 0; i < secret.size(); ++i) {
          secret.data()[i] = static_cast<uint8_t>('a' + (i * 7 + 3) % 26);
          token.data()[i] = static_cast<uint8_t>('A' + (i * 11 + 5) % 26);
        }
        const std::span<const uint8_t> needles[] = {secret.span(), token.span()};
        auto own = [&](const SecretBytes& s) {
          auto a = reinterpret_cast<uintptr_t>(s.data());
          return AddressRange{a, a + s.size()};
        };
        const AddressRange skip_needles[] = {own(secret), own(token)};
        const AddressRange skip_all[] = {own(secret), own(token), arena};

        FakeClock clock(kStart);
        GrantCache cache(clock);
        {
          auto fetch = [&]() -> Result<std::shared_ptr<const CredentialGrant>> {
            pb::FetchCredentialResponse resp;
            resp.set_secret(std::string(secret.view()));  // moved into the message
            (*resp.mutable_extra_secrets())["sessionToken"] = std::string(token.view());
            (*resp.mutable_attributes())["accessKeyId"] = "AKIDEXAMPLE";
            resp.set_expires_at(ToUnixSeconds(kStart) + 300);
            resp.set_spiffe_id(kId);
            resp.set_source("aws-prod");
            resp.set_source_type("aws");
            auto g = GrantFromResponse("backup", resp, clock.Now());
            CHILD_CHECK(c, resp.secret().empty());
            CHILD_CHECK(c, resp.extra_secrets().empty());
            return g;
          };
          auto h = cache.Get("backup", {kId}, fetch);
          if (!CHILD_CHECK(c, h.ok())) return;
          CHILD_CHECK(c, h->WithSecret([&](const SecretParts& s) {
            return s.secret() == secret.view() && s.extra("sessionToken") == token.view();
          }));
          CHILD_CHECK(c, cache.size() == 1);
          for (const auto& hit : custody::testing::FindInWritableMemory(needles, skip_all)) {
            c.Fail("secret copy outside the secure heap: " + hit.mapping, __FILE__, __LINE__);
          }
          // Held: in the arena (the grant's SecretBytes).
          auto held = custody::testing::FindInRange(arena, needles, skip_needles);
          CHILD_CHECK_MSG(c, held.size() >= 2, std::to_string(held.size()) + " hits");
          cache.Clear();
          // The handle still holds it; dropping the handle frees (and wipes) it.
          CHILD_CHECK(c, !custody::testing::FindInRange(arena, needles, skip_needles).empty());
        }
        auto left = custody::testing::FindInRange(arena, needles, skip_needles);
        CHILD_CHECK_MSG(c, left.empty(), std::to_string(left.size()) + " copies left in the arena");
        for (const auto& hit : custody::testing::FindInWritableMemory(needles, skip_all)) {
          c.Fail("after free: secret copy in " + hit.mapping, __FILE__, __LINE__);
        }

        // Expiry frees it the same way (Sweep from the maintenance thread).
        {
          auto fetch = [&]() -> Result<std::shared_ptr<const CredentialGrant>> {
            pb::FetchCredentialResponse resp;
            resp.set_secret(std::string(secret.view()));
            resp.set_expires_at(ToUnixSeconds(clock.Now()) + 300);
            resp.set_spiffe_id(kId);
            return GrantFromResponse("backup", resp, clock.Now());
          };
          CHILD_CHECK(c, cache.Get("backup", {kId}, fetch).ok());
        }
        CHILD_CHECK(c, !custody::testing::FindInRange(arena, needles, skip_needles).empty());
        clock.Advance(std::chrono::seconds(271));
        CHILD_CHECK(c, cache.Sweep() == 1);
        CHILD_CHECK(c, custody::testing::FindInRange(arena, needles, skip_needles).empty());
      }),
      "");
}

TEST(GrantFromResponse, RefusesAnExpiryInThePast) {
  pb::FetchCredentialResponse resp;
  resp.set_secret("sk-abcdefghijklmnopqrstuvwxyz");
  resp.set_expires_at(ToUnixSeconds(kStart) - 1);
  auto g = GrantFromResponse("b", resp, kStart);
  ASSERT_FALSE(g.ok());
  EXPECT_EQ(g.error().code(), ErrorCode::kInvalidArgument);
  EXPECT_TRUE(resp.secret().empty()) << "the response's secret was not wiped on error";
  EXPECT_EQ(g.error().message().find("sk-abc"), std::string::npos);
}

}  // namespace
}  // namespace sigil::agent::creds
