// ReportEvents over the real agent API (gRPC + mTLS on loopback, real SQLite store): what an
// agent may write into the audit trail, and under which name.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

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
  for (const char* bad : {"{", "{\"a\":1} x", "\"str\"", "1", "{\"a\":}", "null"}) {
    pb::AgentEvent e = Denied();
    e.set_details_json(bad);
    st = one(e);
    EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT) << bad;
    EXPECT_NE(st.error_message().find("events[1].details_json"), std::string::npos) << bad;
  }
  // The server sets the agent's time; an agent cannot put its own value in the record.
  pb::AgentEvent own_time = Denied();
  own_time.set_details_json(R"({"a":1,"agent_time_unix_ms":5})");
  st = one(own_time);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_NE(st.error_message().find("set by the server"), std::string::npos) << st.error_message();
  pb::AgentEvent huge = Denied();
  huge.set_details_json("{\"x\":\"" + std::string(17000, 'a') + "\"}");
  EXPECT_EQ(one(huge).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  pb::ReportEventsRequest many;
  for (int i = 0; i < 257; ++i) *many.add_events() = Denied();
  EXPECT_EQ(Report(&node, many, &resp).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  // A refused batch writes nothing, not even its valid first event.
  EXPECT_TRUE(Audit("dataplane.denied").empty());
}

// The agent's time goes into the details as written, whatever their shape; a connection's
// batch of injected requests (up to 16 KiB of details) is one record.
TEST_F(AgentEventsTest, AgentTimeIsAddedToTheDetailsAsWritten) {
  NodeCredential node = JoinNode("node-a");
  const std::vector<std::pair<std::string, nlohmann::json>> cases = {
      {"", nlohmann::json::object()},
      {"{}", nlohmann::json::object()},
      {"  { }  ", nlohmann::json::object()},
      {R"( {"side":"in","nested":{"agent_time_unix_ms":1}} )",
       {{"side", "in"}, {"nested", {{"agent_time_unix_ms", 1}}}}},
  };
  for (const auto& [details, want] : cases) {
    pb::ReportEventsRequest req;
    pb::AgentEvent e = Denied();
    e.set_details_json(details);
    *req.add_events() = e;
    pb::ReportEventsResponse resp;
    grpc::Status st = Report(&node, req, &resp);
    ASSERT_TRUE(st.ok()) << details << ": " << st.error_message();
  }
  pb::ReportEventsRequest req;
  pb::AgentEvent inject;
  inject.set_type("dataplane.inject");
  inject.set_time_unix_ms(99);
  nlohmann::json requests = nlohmann::json::array();
  for (int i = 0; i < 32; ++i) {
    requests.push_back({{"time_unix_ms", 1000 + i},
                        {"method", "GET"},
                        {"host", "api.example"},
                        {"path", "/" + std::string(300, 'p')}});
  }
  const nlohmann::json batch = {{"binding", "b"}, {"service", "api"}, {"requests", requests}};
  ASSERT_GT(batch.dump().size(), 4096u);
  inject.set_details_json(batch.dump());
  *req.add_events() = inject;
  pb::ReportEventsResponse resp;
  grpc::Status st = Report(&node, req, &resp);
  ASSERT_TRUE(st.ok()) << st.error_message();

  auto records = Audit("dataplane.denied");
  ASSERT_EQ(records.size(), cases.size());
  for (size_t i = 0; i < cases.size(); ++i) {
    nlohmann::json got = nlohmann::json::parse(records[i].event.details_json);
    EXPECT_EQ(got["agent_time_unix_ms"], 1234) << cases[i].first;
    got.erase("agent_time_unix_ms");
    EXPECT_EQ(got, cases[i].second) << cases[i].first;
  }
  auto injected = Audit("dataplane.inject");
  ASSERT_EQ(injected.size(), 1u);
  nlohmann::json got = nlohmann::json::parse(injected[0].event.details_json);
  EXPECT_EQ(got["agent_time_unix_ms"], 99);
  EXPECT_EQ(got["requests"], requests);
  ASSERT_TRUE(cp_->store().VerifyAudit().ok());
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
