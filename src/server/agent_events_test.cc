// ReportEvents over the real agent API (gRPC + mTLS on loopback, real SQLite store): what an
// agent may write into the audit trail, and under which name.
#include <gtest/gtest.h>

#include "server/testing/agent_api_fixture.h"

namespace sigil::server {
namespace {

using testing::AgentApiTest;
using testing::NodeCredential;
using testing::SetDeadline;
namespace pb = sigil::agent::v1;

class AgentEventsTest : public AgentApiTest {
 protected:
  grpc::Status Report(const NodeCredential* node, const pb::ReportEventsRequest& req,
                      pb::ReportEventsResponse* resp) {
    grpc::ClientContext ctx;
    SetDeadline(ctx);
    return Client(node)->ReportEvents(&ctx, req, resp);
  }
  static pb::AgentEvent Denied() {
    pb::AgentEvent e;
    e.set_type("dataplane.denied");
    e.set_time_unix_ms(1234);
    e.set_identity("spiffe://example.org/web");
    e.set_pid(777);
    e.set_exe("/usr/bin/curl");
    e.set_details_json(R"({"side":"outbound","dst":"10.0.0.2:8080","node":"forged"})");
    return e;
  }
};

TEST_F(AgentEventsTest, RecordedUnderTheCallingNodeWithServerTime) {
  NodeCredential node = JoinNode("node-a");
  pb::ReportEventsRequest req;
  *req.add_events() = Denied();
  pb::ReportEventsResponse resp;
  grpc::Status st = Report(&node, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(resp.recorded(), 1u);
  auto records = Audit("dataplane.denied");
  ASSERT_EQ(records.size(), 1u);
  const auto& e = records[0].event;
  EXPECT_EQ(e.node, "node-a");  // the authenticated caller, whatever the details say
  EXPECT_EQ(e.actor, "agent:node-a");
  EXPECT_EQ(e.identity, "spiffe://example.org/web");
  EXPECT_EQ(e.pid, 777);
  EXPECT_EQ(e.exe, "/usr/bin/curl");
  EXPECT_NE(e.details_json.find("\"agent_time_unix_ms\":1234"), std::string::npos);
  EXPECT_GT(ToUnixSeconds(e.time), 1234);  // the server's clock, not the agent's
  auto verify = cp_->store().VerifyAudit();
  ASSERT_TRUE(verify.ok());
}

TEST_F(AgentEventsTest, RefusesTypesDetailsAndSizesAgentsMayNotWrite) {
  NodeCredential node = JoinNode("node-a");
  pb::ReportEventsResponse resp;
  auto one = [&](pb::AgentEvent e) {
    pb::ReportEventsRequest req;
    *req.add_events() = Denied();
    *req.add_events() = std::move(e);
    return Report(&node, req, &resp);
  };
  pb::AgentEvent forged = Denied();
  forged.set_type("svid.issue");
  grpc::Status st = one(forged);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("events[1].type"), std::string::npos) << st.error_message();
  pb::AgentEvent bad_json = Denied();
  bad_json.set_details_json("[1,2]");
  EXPECT_EQ(one(bad_json).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  pb::AgentEvent huge = Denied();
  huge.set_details_json("{\"x\":\"" + std::string(5000, 'a') + "\"}");
  EXPECT_EQ(one(huge).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  pb::ReportEventsRequest many;
  for (int i = 0; i < 257; ++i) *many.add_events() = Denied();
  EXPECT_EQ(Report(&node, many, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A refused batch writes nothing, not even its valid first event.
  EXPECT_TRUE(Audit("dataplane.denied").empty());
}

TEST_F(AgentEventsTest, OnlyNodesMayReport) {
  pb::ReportEventsRequest req;
  *req.add_events() = Denied();
  pb::ReportEventsResponse resp;
  EXPECT_EQ(Report(nullptr, req, &resp).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Audit("dataplane.denied").empty());
}

}  // namespace
}  // namespace sigil::server
