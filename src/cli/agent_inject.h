// The agent side of `inject` Services for the data plane proxy: which CredentialBindings a
// process may use for a Service (from the synced bindings) and the grant behind one
// (Agent::FetchCredential), wrapped as the proxy's InjectCredential.
//
// InterceptCaKeeper: the node-local CA of the TLS-interception mode (docs/injection.md, "TLS
// interception") kept in step with the synced Services: on every sync change (and every
// minute, for rotation) the names of the inject Services with spec.inject.terminateTls go to
// InterceptCa::Cover, which creates a CA generation when needed and writes or removes
// <dir>/inject-ca.pem and <dir>/inject-ca-bundle.pem. No such Service: no key, no files.
#pragma once

#include <atomic>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "agent/core/agent.h"
#include "common/log.h"
#include "dataplane/inject/intercept_ca.h"
#include "dataplane/proxy/proxy.h"

namespace sigil::cli {

std::vector<dataplane::InjectBinding> InjectBindingsFor(
    const agent::Agent& agent, const agent::attest::AttestedProcess& process,
    const std::string& service);

Result<std::shared_ptr<const dataplane::InjectCredential>> FetchInjectCredentialFor(
    agent::Agent& agent, const std::string& binding, const agent::attest::AttestedProcess& process);

class InterceptCaKeeper {
 public:
  using PolicyFn = std::function<std::shared_ptr<const dataplane::NodePolicy>()>;
  // Covers the current Services once, then follows changes of `state` (the agent's synced
  // state, which `policy` is built from) on a thread of its own.
  InterceptCaKeeper(const agent::SyncedState& state, PolicyFn policy, std::string dir, Logger& log);
  ~InterceptCaKeeper();
  InterceptCaKeeper(const InterceptCaKeeper&) = delete;
  InterceptCaKeeper& operator=(const InterceptCaKeeper&) = delete;

  std::shared_ptr<dataplane::inject::InterceptCa> ca() const { return ca_; }
  // Stops following and drops every generation (the keys, and the files).
  void Stop();

 private:
  void Update();

  const agent::SyncedState& state_;
  const PolicyFn policy_;
  Logger& log_;
  std::shared_ptr<dataplane::inject::InterceptCa> ca_;
  std::string last_error_;
  std::atomic<bool> stop_{false};
  std::thread thread_;
};

}  // namespace sigil::cli
