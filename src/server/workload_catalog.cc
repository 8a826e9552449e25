#include "server/workload_catalog.h"

namespace sigil::server {

Result<WorkloadCatalog::Snapshot> WorkloadCatalog::Current() {
  SIGIL_ASSIGN_OR_RETURN(uint64_t revision, store_.CurrentRevision());
  std::lock_guard lock(mu_);
  if (snapshot_ && revision_ == revision) return snapshot_;
  SIGIL_ASSIGN_OR_RETURN(store::ResourceList list, store_.List("WorkloadIdentity"));
  auto specs = std::make_shared<std::vector<resources::WorkloadIdentitySpec>>();
  specs->reserve(list.items.size());
  uint64_t skipped = 0;
  for (const store::StoredResource& item : list.items) {
    auto resource =
        resources::ResourceFromStored(item.kind, item.name, item.spec_json, item.resource_version);
    if (!resource.ok()) {
      ++skipped;
      continue;
    }
    auto spec = resources::WorkloadIdentitySpec::FromResource(*resource);
    if (!spec.ok()) {
      ++skipped;
      continue;
    }
    specs->push_back(std::move(spec).value());
  }
  snapshot_ = std::move(specs);
  revision_ = list.revision;
  skipped_ = skipped;
  return snapshot_;
}

uint64_t WorkloadCatalog::skipped() const {
  std::lock_guard lock(mu_);
  return skipped_;
}

}  // namespace sigil::server
