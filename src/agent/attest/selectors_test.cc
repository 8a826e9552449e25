// Selectors(): the exact strings, and agreement with the resource validator that
// WorkloadIdentity selectors go through (resources::CanonicalSelector).
#include <gtest/gtest.h>
#include <unistd.h>

#include "agent/attest/attest.h"
#include "agent/attest/attested_process.h"
#include "agent/attest/selector_syntax.h"
#include "resources/selector.h"

namespace sigil::agent::attest {
namespace {

const std::string kSha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
const std::string kId = "3f4e2a1b9c8d7e6f5a4b3c2d1e0f9a8b7c6d5e4f3a2b1c0d9e8f7a6b5c4d3e2f";

AttestedProcess Full() {
  AttestedProcess p;
  p.pid = 42;
  p.uid = 1000;
  p.gid = 1001;
  p.user = "alice";
  p.group = "staff";
  p.exe_path = "/usr/bin/x";
  p.exe_sha256 = kSha;
  p.cgroup = "/system.slice/foo.service";
  p.container_id = kId;
  p.pod_uid = "5f4bd0a8-3b5c-4c8e-9d55-2a4d1c0e9f11";
  p.ppid = 1;
  p.parent_exe = "/sbin/init";
  return p;
}

void ExpectAllCanonical(const std::vector<std::string>& selectors) {
  for (const auto& s : selectors) {
    auto canonical = resources::CanonicalSelector(s);
    ASSERT_TRUE(canonical.ok()) << s << ": " << canonical.error().ToString();
    EXPECT_EQ(*canonical, s) << "not in canonical form";
  }
}

TEST(AttestSelectorsTest, ExactStrings) {
  EXPECT_EQ(Full().Selectors(), (std::vector<std::string>{
                                    "unix:uid:1000",
                                    "unix:gid:1001",
                                    "unix:user:alice",
                                    "unix:group:staff",
                                    "unix:path:/usr/bin/x",
                                    "unix:sha256:" + kSha,
                                    "cgroup:/system.slice/foo.service",
                                    "container:" + kId,
                                    "k8s:pod-uid:5f4bd0a8-3b5c-4c8e-9d55-2a4d1c0e9f11",
                                }));
  ExpectAllCanonical(Full().Selectors());
}

TEST(AttestSelectorsTest, MatchesAWorkloadIdentity) {
  std::vector<std::string> required = {"unix:uid:1000", "unix:path:/usr/bin/x",
                                       "cgroup:/system.slice", "container:" + kId};
  EXPECT_TRUE(resources::SelectorsMatch(required, Full().Selectors()));
  required.push_back("unix:uid:0");
  EXPECT_FALSE(resources::SelectorsMatch(required, Full().Selectors()));
}

TEST(AttestSelectorsTest, Omissions) {
  AttestedProcess p = Full();
  p.user = "";           // no NSS entry
  p.group = "bad name";  // not a valid selector value
  p.exe_deleted = true;  // path no longer names the file
  p.cgroup = "";         // none usable
  p.container_id = "";
  p.pod_uid = "d41d8cd98f00b204e9800998ecf8427e";  // static pod: not a UUID
  EXPECT_EQ(p.Selectors(),
            (std::vector<std::string>{"unix:uid:1000", "unix:gid:1001", "unix:sha256:" + kSha}));
  p.exe_deleted = false;
  p.exe_on_fuse = true;  // the hash is not trustworthy
  EXPECT_EQ(p.Selectors(),
            (std::vector<std::string>{"unix:uid:1000", "unix:gid:1001", "unix:path:/usr/bin/x"}));
}

TEST(AttestSelectorsTest, ValuesTheValidatorWouldRejectAreNotEmitted) {
  AttestedProcess p = Full();
  p.uid = 4294967295U;
  p.user = "-dash";
  p.group = std::string(33, 'g');
  p.exe_path = "/usr//bin/x";
  p.exe_sha256 = "ABC";
  p.cgroup = "/../escaped";
  p.container_id = std::string(64, 'G');
  p.pod_uid = "5F4BD0A8-3B5C-4C8E-9D55-2A4D1C0E9F11";
  EXPECT_EQ(p.Selectors(), (std::vector<std::string>{"unix:gid:1001"}));
}

TEST(AttestSelectorsTest, RootCgroupIsASelector) {
  AttestedProcess p = Full();
  p.cgroup = "/";
  auto s = p.Selectors();
  EXPECT_NE(std::find(s.begin(), s.end(), "cgroup:/"), s.end());
  ExpectAllCanonical(s);
}

TEST(AttestSelectorsTest, RealProcessSelectorsAreCanonical) {
  Attestor attestor;
  auto p = attestor.Attest(::getpid());
  ASSERT_TRUE(p.ok()) << p.error().ToString();
  ExpectAllCanonical(p->Selectors());
  EXPECT_GE(p->Selectors().size(), 4U);
}

// The local syntax checks agree with the validator on the edge cases.
TEST(AttestSelectorsTest, SyntaxAgreesWithValidator) {
  for (const std::string& path :
       std::vector<std::string>{"/a", "/a/b", "/", "//a", "/a/", "/a/./b", "/a/../b", "a", "/a\tb",
                                "/a b", std::string("/a\x7f"), "/" + std::string(4096, 'x')}) {
    bool ours = internal::IsNormalizedAbsolutePath(path, /*allow_root=*/false);
    bool theirs = resources::CanonicalSelector("unix:path:" + path).ok();
    EXPECT_EQ(ours, theirs) << path;
    bool ours_cg = internal::IsNormalizedAbsolutePath(path, /*allow_root=*/true);
    bool theirs_cg = resources::CanonicalSelector("cgroup:" + path).ok();
    EXPECT_EQ(ours_cg, theirs_cg) << path;
  }
  for (const std::string& name :
       std::vector<std::string>{"alice", "a.b_c-d", "-x", "", std::string(32, 'a'),
                                std::string(33, 'a'), "a b", "a:b", "Ünïcode"}) {
    EXPECT_EQ(internal::IsSelectorUnixName(name),
              resources::CanonicalSelector("unix:user:" + name).ok())
        << name;
  }
}

}  // namespace
}  // namespace sigil::agent::attest
