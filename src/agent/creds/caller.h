// The process behind a FUSE request.
//
// The kernel puts the calling *thread's* id into each FUSE request (fuse_get_context()->pid;
// a thread id of the agent's pid namespace, 0 when the caller is not visible there). The
// attestor works on processes (pidfd_open refuses a thread id), so the thread is mapped to its
// thread group first (/proc/TID/status "Tgid:"), the group is attested (pidfd-pinned, see
// attest/attest.h), and then /proc/TGID/task/TID must still exist: the requesting thread is
// blocked in our request, and a thread id belongs to one thread group, so if it is listed
// under the attested process, the request came from that process (a tid reused after the
// thread died while the attestation ran would have to be reused inside the same process).
#pragma once

#include <sys/types.h>

#include "agent/attest/attest.h"
#include "common/result.h"

namespace sigil::agent::creds {

// PermissionDenied for pid 0 (outside our pid namespace) and for the agent itself; the
// attestor's errors otherwise. Retries an attestation that raced an exec (Aborted) twice.
Result<attest::AttestedProcess> AttestCaller(attest::Attestor& attestor, pid_t tid);

}  // namespace sigil::agent::creds
