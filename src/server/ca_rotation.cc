// ControlPlane: CA rotation (`sigil ca rotate`, `sigil ca status`, the maintenance tick) and the
// write-ahead of issuance expiries that decides when a retired CA may leave the bundle.
// docs/operations.md, "CA rotation".
#include <algorithm>

#include <nlohmann/json.hpp>

#include "common/duration.h"
#include "server/control_plane.h"

namespace sigil::server {
namespace {

// How far ahead of an issuance's expiry the stored bound is written: half the remaining
// lifetime, at most this. One store write per ~5 minutes of issuance at most, and a retired
// CA stays in the bundle at most this much longer than strictly needed.
constexpr Seconds kIssuanceWriteAhead{300};

nlohmann::json UnixOrNull(const std::optional<TimePoint>& t) {
  return t ? nlohmann::json(ToUnixSeconds(*t)) : nlohmann::json(nullptr);
}

}  // namespace

void ControlPlane::MarkDurableLocked() {
  const core::AuthorityGeneration& active = authorities_->active();
  durable_ = {active.jwt.kid, active.x509_issued_until, active.jwt_issued_until};
}

Result<void> ControlPlane::KeepIssuanceDurableLocked() {
  const core::AuthorityGeneration& active = authorities_->active();
  auto covered = [](const std::optional<TimePoint>& have, const std::optional<TimePoint>& stored) {
    return !have || (stored && *have <= *stored);
  };
  if (durable_.kid == active.jwt.kid && covered(active.x509_issued_until, durable_.x509) &&
      covered(active.jwt_issued_until, durable_.jwt)) {
    return {};
  }
  const TimePoint now = clock_.Now();
  auto ahead = [now](const std::optional<TimePoint>& t) -> std::optional<TimePoint> {
    if (!t) return t;
    auto half = std::chrono::duration_cast<Seconds>((*t - now) / 2);
    return *t + std::clamp(half, Seconds(0), kIssuanceWriteAhead);
  };
  const std::string kid = active.jwt.kid;
  const std::optional<TimePoint> x509 = ahead(active.x509_issued_until);
  const std::optional<TimePoint> jwt = ahead(active.jwt_issued_until);
  // By key id, not "the active one": after a conflict the re-read set may have another
  // generation active (a replica activated it meanwhile); the bound belongs to the signer.
  auto stored = MutateAuthoritiesLocked(
      [&](core::AuthoritySet& set) -> Result<std::optional<std::vector<store::AuditEvent>>> {
        if (!set.ExtendIssuedUntil(kid, x509, jwt)) {
          return Unavailable("the CA generation that signed (JWT kid " + kid +
                             ") left the bundle meanwhile; try again");
        }
        return std::vector<store::AuditEvent>{};
      });
  if (!stored.ok()) {
    return std::move(stored).error().WithContext("recording the CA's issued expiry");
  }
  return {};
}

Result<bool> ControlPlane::RotateIfDue() {
  std::lock_guard lock(mu_);
  const TimePoint now = clock_.Now();
  if (!authorities_->RotationDue(now)) return false;
  // The steps run on a copy that replaces the live set only once it is stored: no certificate
  // is signed by, and no bundle published with, a generation the store does not hold. A failed
  // write leaves everything as it was; the next tick tries again. Another replica that took
  // the same steps first wins the compare-and-swap; then the re-read set has nothing due.
  return MutateAuthoritiesLocked(
      [&](core::AuthoritySet& next) -> Result<std::optional<std::vector<store::AuditEvent>>> {
        std::vector<core::RotationStep> steps;
        SIGIL_ASSIGN_OR_RETURN(bool changed, next.Rotate(now, &steps));
        if (!changed) return std::nullopt;
        const uint64_t sequence = next.Bundle().sequence();
        std::vector<store::AuditEvent> audit;
        for (const core::RotationStep& step : steps) {
          const core::GenerationInfo& g = step.generation;
          nlohmann::json details = {{"ca_sha256", g.ca_sha256},
                                    {"jwt_kid", g.jwt_kid},
                                    {"not_after", ToUnixSeconds(g.not_after)},
                                    {"bundle_sequence", sequence}};
          std::string type;
          switch (step.kind) {
            case core::RotationStep::Kind::kPrepared:
              type = "ca.rotate.prepare";
              details["root_sha256"] = g.root_sha256;
              details["activate_at"] = UnixOrNull(g.activate_at);
              details["trigger"] = "schedule";
              break;
            case core::RotationStep::Kind::kActivated:
              type = "ca.rotate.activate";
              if (step.previous) {
                details["previous_ca_sha256"] = step.previous->ca_sha256;
                details["previous_leaves_bundle_at"] = UnixOrNull(step.previous->leaves_bundle_at);
              }
              if (step.expired) details["reason"] = "the active CA had expired";
              break;
            case core::RotationStep::Kind::kRetired:
              type = "ca.rotate.retire";
              details["x509_issued_until"] = UnixOrNull(g.x509_issued_until);
              details["jwt_issued_until"] = UnixOrNull(g.jwt_issued_until);
              break;
          }
          store::AuditEvent e = Event(std::move(type), "server");
          e.details_json = details.dump();
          audit.push_back(std::move(e));
        }
        return audit;
      });
}

Result<core::GenerationInfo> ControlPlane::RotateCa(Seconds activate_after, bool force,
                                                    const std::string& actor) {
  if (activate_after < Seconds(0) || activate_after > options_.ca.ttl) {
    return InvalidArgument("activate_after: must be between 0s and the CA ttl (" +
                           FormatDuration(options_.ca.ttl) + "), got " +
                           std::to_string(activate_after.count()) + "s");
  }
  std::lock_guard lock(mu_);
  const TimePoint now = clock_.Now();
  core::GenerationInfo prepared;
  // Decided on the set as stored: after a conflict (another replica rotated meanwhile) the
  // pending check runs again on the fresh set.
  SIGIL_TRY(MutateAuthoritiesLocked(
      [&](core::AuthoritySet& next) -> Result<std::optional<std::vector<store::AuditEvent>>> {
        bool rescheduled = false;
        if (const core::AuthorityGeneration* pending = next.prepared();
            pending != nullptr && pending->activate_at) {
          if (!force) {
            const auto generations = next.Generations();
            const core::GenerationInfo& p = generations.back();  // the prepared one comes last
            return FailedPrecondition("ca rotate: a rotation is already pending: generation " +
                                      p.ca_sha256 + " activates at " +
                                      FormatRfc3339(p.activate_at.value_or(now)) +
                                      "; wait for it (sigil ca status), or pass --force to "
                                      "reschedule its activation");
          }
          rescheduled = true;
        }
        bool created = false;
        SIGIL_ASSIGN_OR_RETURN(prepared, next.RotateNow(now, activate_after, &created));
        store::AuditEvent e = Event("ca.rotate.prepare", actor);
        e.details_json = nlohmann::json{{"ca_sha256", prepared.ca_sha256},
                                        {"root_sha256", prepared.root_sha256},
                                        {"jwt_kid", prepared.jwt_kid},
                                        {"not_after", ToUnixSeconds(prepared.not_after)},
                                        {"activate_at", UnixOrNull(prepared.activate_at)},
                                        {"activate_after_seconds", activate_after.count()},
                                        {"new_generation", created},
                                        {"rescheduled", rescheduled},
                                        {"trigger", "operator"},
                                        {"bundle_sequence", next.Bundle().sequence()}}
                             .dump();
        return std::vector<store::AuditEvent>{std::move(e)};
      }));
  return prepared;
}

CaRotationStatus ControlPlane::CaStatus() const {
  std::lock_guard lock(mu_);
  return {clock_.Now(), bundle_->sequence(), authorities_->Generations()};
}

core::Certificate ControlPlane::SigningCa() const {
  std::lock_guard lock(mu_);
  return authorities_->active().ca.certificate();
}

}  // namespace sigil::server
