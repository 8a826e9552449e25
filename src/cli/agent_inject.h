// The agent side of `inject` Services for the data plane proxy: which CredentialBindings a
// process may use for a Service (from the synced bindings) and the grant behind one
// (Agent::FetchCredential), wrapped as the proxy's InjectCredential.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "agent/core/agent.h"
#include "dataplane/proxy/proxy.h"

namespace sigil::cli {

std::vector<dataplane::InjectBinding> InjectBindingsFor(
    const agent::Agent& agent, const agent::attest::AttestedProcess& process,
    const std::string& service);

Result<std::shared_ptr<const dataplane::InjectCredential>> FetchInjectCredentialFor(
    agent::Agent& agent, const std::string& binding, const agent::attest::AttestedProcess& process);

}  // namespace sigil::cli
