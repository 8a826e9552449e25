// `sigil pki`: offline PKI operations on a CA directory. Useful for air-gapped setups, for
// inspecting what the server would issue, and as the harness the interop tests drive.
//
// CA directory layout (written by `ca-init`):
//   trust-domain   the trust domain name
//   ca-chain.pem   signing certificate first, root last
//   ca-key.pem     signing key, PKCS#8, 0600
//   jwt-key.pem    JWT signing key, PKCS#8, 0600
//   jwt-kid        key id of the JWT key
//   bundle.pem     X.509 authorities (the root)
//   bundle.jwks    SPIFFE bundle (x509-svid + jwt-svid entries)
#include <sys/stat.h>

#include <iostream>
#include <map>
#include <nlohmann/json.hpp>

#include "cli/commands.h"
#include "cli/flags.h"
#include "common/duration.h"
#include "common/file_util.h"
#include "core/ca.h"
#include "core/csr.h"
#include "core/jwt_svid.h"
#include "core/trust_bundle.h"
#include "core/x509_svid.h"

namespace sigil::cli {
namespace {

using core::Certificate;
using core::PrivateKey;
using core::TrustBundle;
using core::TrustDomain;

constexpr size_t kMaxFile = size_t{1024} * 1024;

struct Subcommand {
  std::string_view name;
  std::string_view summary;
  int (*run)(std::span<const std::string>);
};

int Fail(std::string_view sub, const Error& e) {
  std::cerr << "sigil pki " << sub << ": " << e.message() << "\n";
  return kExitFailure;
}

Result<PrivateKey> LoadKey(const std::string& path) {
  SIGIL_ASSIGN_OR_RETURN(SecretBytes pem, ReadSecretFile(path, core::kMaxKeyInputBytes));
  auto key = PrivateKey::FromPem(pem.view());
  if (!key.ok()) return std::move(key).error().WithContext(path);
  return key;
}

Result<void> WriteKey(const std::string& path, const PrivateKey& key, Overwrite overwrite) {
  SIGIL_ASSIGN_OR_RETURN(SecretBytes pem, key.ToPkcs8Pem());
  return WriteFileAtomic(path, pem.view(), 0600, overwrite);
}

Result<TrustDomain> LoadTrustDomain(const std::string& dir) {
  SIGIL_ASSIGN_OR_RETURN(std::string td, ReadFile(dir + "/trust-domain", 1024));
  while (!td.empty() && (td.back() == '\n' || td.back() == '\r')) td.pop_back();
  return TrustDomain::Parse(td);
}

Result<core::X509Ca> LoadCa(const std::string& dir) {
  SIGIL_ASSIGN_OR_RETURN(TrustDomain td, LoadTrustDomain(dir));
  SIGIL_ASSIGN_OR_RETURN(std::string chain_pem, ReadFile(dir + "/ca-chain.pem", kMaxFile));
  SIGIL_ASSIGN_OR_RETURN(auto chain, core::ParseCertificatesPem(chain_pem));
  SIGIL_ASSIGN_OR_RETURN(PrivateKey key, LoadKey(dir + "/ca-key.pem"));
  return core::X509Ca::Load(td, std::move(chain), std::move(key));
}

// A bundle file is JWKS if it parses as JSON object, else PEM certificates.
Result<TrustBundle> LoadBundle(const TrustDomain& td, const std::string& path) {
  SIGIL_ASSIGN_OR_RETURN(std::string text, ReadFile(path, core::kMaxJwksBytes));
  size_t first = text.find_first_not_of(" \t\r\n");
  auto bundle = (first != std::string::npos && text[first] == '{')
                    ? TrustBundle::ParseJwks(td, text)
                    : TrustBundle::FromX509Pem(td, text);
  if (!bundle.ok()) return std::move(bundle).error().WithContext(path);
  return bundle;
}

int KeyGen(std::span<const std::string> args) {
  std::string key_type = "ec-p256", out;
  FlagSet flags("pki keygen --out FILE [--key-type TYPE]",
                "Generates a private key and writes it as unencrypted PKCS#8 PEM (mode 0600).");
  flags.String("key-type", &key_type,
               "ec-p256, ec-p384, ec-p521, rsa-2048, rsa-3072, rsa-4096, ed25519");
  flags.String("out", &out, "output file (must not exist)", true);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  auto type = core::ParseKeyType(key_type);
  if (!type.ok()) return Fail("keygen", type.error().WithContext("--key-type"));
  auto key = PrivateKey::Generate(*type);
  if (!key.ok()) return Fail("keygen", key.error());
  if (auto w = WriteKey(out, *key, Overwrite::kRefuse); !w.ok()) return Fail("keygen", w.error());
  std::cout << "wrote " << key_type << " key to " << out << " (public key sha256 "
            << key->Public().Fingerprint() << ")\n";
  return kExitOk;
}

int MakeCsr(std::span<const std::string> args) {
  std::string key_path, out;
  FlagSet flags("pki csr --key FILE --out FILE",
                "Writes a PKCS#10 certificate signing request for a private key.");
  flags.String("key", &key_path, "private key (PEM)", true);
  flags.String("out", &out, "output CSR (PEM)", true);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  auto key = LoadKey(key_path);
  if (!key.ok()) return Fail("csr", key.error());
  auto der = core::CreateCsrDer(*key);
  if (!der.ok()) return Fail("csr", der.error());
  if (auto w = WriteFileAtomic(out, core::CsrDerToPem(*der), 0644); !w.ok()) {
    return Fail("csr", w.error());
  }
  return kExitOk;
}

Result<void> WriteBundleFiles(const std::string& dir, const TrustBundle& bundle) {
  SIGIL_TRY(WriteFileAtomic(dir + "/bundle.pem", bundle.X509AuthoritiesPem(), 0644));
  return WriteFileAtomic(dir + "/bundle.jwks", bundle.ToJwks() + "\n", 0644);
}

int CaInit(std::span<const std::string> args) {
  std::string td_text, dir, key_type = "ec-p256", upstream_cert, upstream_key;
  Seconds ttl = core::kDefaultCaTtl;
  FlagSet flags("pki ca-init --trust-domain TD --dir DIR [flags]",
                "Creates a CA for a trust domain: a self-signed root, or an intermediate under an\n"
                "upstream CA (--upstream-cert/--upstream-key), plus a JWT signing key.");
  flags.String("trust-domain", &td_text, "trust domain name, e.g. example.org", true);
  flags.String("dir", &dir, "CA directory to create (must not hold a CA yet)", true);
  flags.String("key-type", &key_type, "CA key type");
  flags.Duration("ttl", &ttl, "CA certificate lifetime");
  flags.String("upstream-cert", &upstream_cert,
               "upstream CA chain PEM (its cert first, root last)");
  flags.String("upstream-key", &upstream_key, "upstream CA private key PEM");
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  if (upstream_cert.empty() != upstream_key.empty()) {
    return Fail("ca-init", InvalidArgument("--upstream-cert and --upstream-key go together"));
  }
  auto td = TrustDomain::Parse(td_text);
  if (!td.ok()) return Fail("ca-init", td.error().WithContext("--trust-domain"));
  auto type = core::ParseKeyType(key_type);
  if (!type.ok()) return Fail("ca-init", type.error().WithContext("--key-type"));
  core::CaOptions options{*td, *type, ttl, core::kDefaultBackdate};
  TimePoint now = Clock::System().Now();

  Result<core::X509Ca> ca = InvalidArgument("unreachable");
  if (upstream_cert.empty()) {
    ca = core::X509Ca::CreateSelfSigned(options, now);
  } else {
    auto chain_pem = ReadFile(upstream_cert, kMaxFile);
    if (!chain_pem.ok()) return Fail("ca-init", chain_pem.error());
    auto chain = core::ParseCertificatesPem(*chain_pem);
    if (!chain.ok()) return Fail("ca-init", chain.error().WithContext(upstream_cert));
    auto key = LoadKey(upstream_key);
    if (!key.ok()) return Fail("ca-init", key.error());
    ca = core::X509Ca::CreateIntermediate(options, *chain, *key, now);
  }
  if (!ca.ok()) return Fail("ca-init", ca.error());
  auto jwt_key = PrivateKey::Generate(core::KeyType::kEcP256);
  if (!jwt_key.ok()) return Fail("ca-init", jwt_key.error());
  auto kid = core::RandomKeyId();
  if (!kid.ok()) return Fail("ca-init", kid.error());

  TrustBundle bundle(*td);
  bundle.AddX509Authority(ca->root());
  if (auto a = bundle.AddJwtAuthority(*kid, jwt_key->Public()); !a.ok()) {
    return Fail("ca-init", a.error());
  }
  bundle.set_sequence(1);
  bundle.set_refresh_hint(Seconds(300));

  auto steps = [&]() -> Result<void> {
    SIGIL_TRY(MakeDirs(dir, 0700));
    // The key is written first with kRefuse: an existing CA is never overwritten.
    SIGIL_TRY(WriteKey(dir + "/ca-key.pem", ca->key(), Overwrite::kRefuse));
    SIGIL_TRY(WriteKey(dir + "/jwt-key.pem", *jwt_key, Overwrite::kAllow));
    SIGIL_TRY(WriteFileAtomic(dir + "/jwt-kid", *kid + "\n", 0644));
    SIGIL_TRY(WriteFileAtomic(dir + "/trust-domain", td->name() + "\n", 0644));
    SIGIL_TRY(WriteFileAtomic(dir + "/ca-chain.pem", core::CertificatesToPem(ca->chain()), 0644));
    return WriteBundleFiles(dir, bundle);
  };
  if (auto s = steps(); !s.ok()) return Fail("ca-init", s.error());
  std::cout << "initialised CA for " << td->IdString() << " in " << dir << "\n"
            << "  ca certificate sha256 " << ca->certificate().Fingerprint() << "\n"
            << "  root sha256 " << ca->root().Fingerprint() << "\n"
            << "  valid until " << FormatRfc3339(ca->not_after()) << "\n"
            << "  jwt key id " << *kid << "\n";
  return kExitOk;
}

int Issue(std::span<const std::string> args) {
  std::string dir, csr_path, id_text, out;
  std::vector<std::string> dns;
  Seconds ttl = core::kDefaultX509SvidTtl;
  FlagSet flags("pki issue --dir DIR --csr FILE --spiffe-id ID --out FILE [flags]",
                "Issues an X.509-SVID for the key in a CSR. The CSR proves key possession only:\n"
                "names and usages come from these flags, never from the CSR.");
  flags.String("dir", &dir, "CA directory (from ca-init)", true);
  flags.String("csr", &csr_path, "PKCS#10 CSR (PEM)", true);
  flags.String("spiffe-id", &id_text, "SPIFFE ID to certify", true);
  flags.StringList("dns", &dns, "DNS SAN to add");
  flags.Duration("ttl", &ttl, "SVID lifetime (capped at the CA's notAfter)");
  flags.String("out", &out, "output chain PEM (leaf first, no root)", true);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  auto id = core::SpiffeId::Parse(id_text);
  if (!id.ok()) return Fail("issue", id.error().WithContext("--spiffe-id"));
  auto ca = LoadCa(dir);
  if (!ca.ok()) return Fail("issue", ca.error());
  auto csr_pem = ReadFile(csr_path, core::kMaxCsrBytes * 2);
  if (!csr_pem.ok()) return Fail("issue", csr_pem.error());
  auto csr = core::Csr::ParsePem(*csr_pem);
  if (!csr.ok()) return Fail("issue", csr.error().WithContext(csr_path));
  core::KeyPolicy policy;
  policy.allowed.insert(core::KeyType::kEd25519);  // offline tooling: allow every type we know
  policy.allowed.insert(core::KeyType::kEcP521);
  auto pub = csr->Verify(policy);
  if (!pub.ok()) return Fail("issue", pub.error());
  auto svid = ca->IssueX509Svid({*id, *pub, dns, ttl}, Clock::System().Now());
  if (!svid.ok()) return Fail("issue", svid.error());
  if (auto w = WriteFileAtomic(out, core::CertificatesToPem(svid->chain), 0644); !w.ok()) {
    return Fail("issue", w.error());
  }
  std::cout << "issued " << id->str() << " serial=" << svid->leaf.SerialHex()
            << " expires=" << FormatRfc3339(svid->leaf.NotAfter()) << "\n";
  return kExitOk;
}

int Verify(std::span<const std::string> args) {
  std::string td_text, bundle_path, svid_path;
  FlagSet flags("pki verify --trust-domain TD --bundle FILE --svid FILE",
                "Verifies an X.509-SVID chain against a trust bundle (PEM or SPIFFE JWKS) and\n"
                "prints the verified SPIFFE ID.");
  flags.String("trust-domain", &td_text, "trust domain the bundle belongs to", true);
  flags.String("bundle", &bundle_path, "bundle file (PEM certificates or JWKS)", true);
  flags.String("svid", &svid_path, "SVID chain PEM (leaf first)", true);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  auto td = TrustDomain::Parse(td_text);
  if (!td.ok()) return Fail("verify", td.error().WithContext("--trust-domain"));
  auto bundle = LoadBundle(*td, bundle_path);
  if (!bundle.ok()) return Fail("verify", bundle.error());
  auto pem = ReadFile(svid_path, kMaxFile);
  if (!pem.ok()) return Fail("verify", pem.error());
  auto chain = core::ParseCertificatesPem(*pem);
  if (!chain.ok()) return Fail("verify", chain.error().WithContext(svid_path));
  core::BundleSet bundles;
  bundles.Put(std::make_shared<const TrustBundle>(std::move(*bundle)));
  auto id = core::VerifyX509Svid(*chain, bundles, Clock::System().Now());
  if (!id.ok()) return Fail("verify", id.error());
  std::cout << id->str() << "\n";
  return kExitOk;
}

int JwtMint(std::span<const std::string> args) {
  std::string dir, id_text;
  std::vector<std::string> audience;
  Seconds ttl = core::kDefaultJwtSvidTtl;
  FlagSet flags("pki jwt-mint --dir DIR --spiffe-id ID --audience AUD [flags]",
                "Mints a JWT-SVID with the CA directory's JWT key and prints it.");
  flags.String("dir", &dir, "CA directory (from ca-init)", true);
  flags.String("spiffe-id", &id_text, "subject SPIFFE ID", true);
  flags.StringList("audience", &audience, "audience");
  flags.Duration("ttl", &ttl, "token lifetime");
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  if (audience.empty())
    return Fail("jwt-mint", InvalidArgument("at least one --audience is required"));
  auto id = core::SpiffeId::Parse(id_text);
  if (!id.ok()) return Fail("jwt-mint", id.error().WithContext("--spiffe-id"));
  auto td = LoadTrustDomain(dir);
  if (!td.ok()) return Fail("jwt-mint", td.error());
  if (!id->IsMemberOf(*td)) {
    return Fail("jwt-mint", PermissionDenied(id->str() + " is not in trust domain " + td->name()));
  }
  if (id->IsTrustDomainId()) {
    return Fail("jwt-mint",
                InvalidArgument("--spiffe-id: a JWT-SVID needs a SPIFFE ID with a path"));
  }
  auto key = LoadKey(dir + "/jwt-key.pem");
  if (!key.ok()) return Fail("jwt-mint", key.error());
  auto kid = ReadFile(dir + "/jwt-kid", 1024);
  if (!kid.ok()) return Fail("jwt-mint", kid.error());
  while (!kid->empty() && kid->back() == '\n') kid->pop_back();
  TimePoint now = Clock::System().Now();
  auto token = core::MintJwtSvid(*key, *kid, {*id, audience, now, now + ttl});
  if (!token.ok()) return Fail("jwt-mint", token.error());
  std::cout << *token << "\n";
  return kExitOk;
}

int JwtValidate(std::span<const std::string> args) {
  std::string td_text, bundle_path, token_text, token_file;
  std::vector<std::string> audience;
  FlagSet flags(
      "pki jwt-validate --trust-domain TD --bundle FILE --audience AUD (--token T | --token-file "
      "F)",
      "Validates a JWT-SVID against a SPIFFE JWKS bundle and prints its ID and claims.");
  flags.String("trust-domain", &td_text, "trust domain of the bundle", true);
  flags.String("bundle", &bundle_path, "SPIFFE bundle (JWKS)", true);
  flags.StringList("audience", &audience, "expected audience (all must be present)");
  flags.String("token", &token_text, "the token");
  flags.String("token-file", &token_file, "file holding the token");
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  if (audience.empty())
    return Fail("jwt-validate", InvalidArgument("at least one --audience is required"));
  if (token_text.empty() == token_file.empty()) {
    return Fail("jwt-validate", InvalidArgument("give exactly one of --token and --token-file"));
  }
  if (!token_file.empty()) {
    auto t = ReadFile(token_file, core::kMaxJwtBytes + 2);
    if (!t.ok()) return Fail("jwt-validate", t.error());
    token_text = *t;
    while (!token_text.empty() && (token_text.back() == '\n' || token_text.back() == '\r')) {
      token_text.pop_back();
    }
  }
  auto td = TrustDomain::Parse(td_text);
  if (!td.ok()) return Fail("jwt-validate", td.error().WithContext("--trust-domain"));
  auto bundle = LoadBundle(*td, bundle_path);
  if (!bundle.ok()) return Fail("jwt-validate", bundle.error());
  core::BundleSet bundles;
  bundles.Put(std::make_shared<const TrustBundle>(std::move(*bundle)));
  auto svid = core::ValidateJwtSvid(token_text, bundles, audience, Clock::System().Now());
  if (!svid.ok()) return Fail("jwt-validate", svid.error());
  nlohmann::json out = {{"spiffe_id", svid->id.str()}, {"claims", svid->claims}};
  std::cout << out.dump() << "\n";
  return kExitOk;
}

int BundleAddJwtKey(std::span<const std::string> args) {
  std::string td_text, bundle_path, kid, pub_path, out;
  FlagSet flags(
      "pki bundle-add-jwt-key --trust-domain TD --bundle IN --kid KID --public-key PEM --out OUT",
      "Adds a JWT authority (public key + kid) to a SPIFFE bundle; bumps spiffe_sequence.");
  flags.String("trust-domain", &td_text, "trust domain of the bundle", true);
  flags.String("bundle", &bundle_path, "input bundle (JWKS or PEM)", true);
  flags.String("kid", &kid, "key id", true);
  flags.String("public-key", &pub_path, "public key PEM (SubjectPublicKeyInfo)", true);
  flags.String("out", &out, "output JWKS", true);
  if (auto rc = ParseOrExit(flags, args)) return *rc;
  auto td = TrustDomain::Parse(td_text);
  if (!td.ok()) return Fail("bundle-add-jwt-key", td.error().WithContext("--trust-domain"));
  auto bundle = LoadBundle(*td, bundle_path);
  if (!bundle.ok()) return Fail("bundle-add-jwt-key", bundle.error());
  auto pem = ReadFile(pub_path, core::kMaxKeyInputBytes);
  if (!pem.ok()) return Fail("bundle-add-jwt-key", pem.error());
  auto pub = core::PublicKey::FromPem(*pem);
  if (!pub.ok()) return Fail("bundle-add-jwt-key", pub.error().WithContext(pub_path));
  if (auto a = bundle->AddJwtAuthority(kid, *pub); !a.ok())
    return Fail("bundle-add-jwt-key", a.error());
  bundle->set_sequence(bundle->sequence() + 1);
  if (auto w = WriteFileAtomic(out, bundle->ToJwks() + "\n", 0644); !w.ok()) {
    return Fail("bundle-add-jwt-key", w.error());
  }
  return kExitOk;
}

constexpr Subcommand kSubcommands[] = {
    {"keygen", "generate a private key", KeyGen},
    {"csr", "write a CSR for a key", MakeCsr},
    {"ca-init", "create a CA directory (self-signed or under an upstream CA)", CaInit},
    {"issue", "issue an X.509-SVID from a CSR", Issue},
    {"verify", "verify an X.509-SVID against a bundle", Verify},
    {"jwt-mint", "mint a JWT-SVID", JwtMint},
    {"jwt-validate", "validate a JWT-SVID", JwtValidate},
    {"bundle-add-jwt-key", "add a JWT authority to a bundle", BundleAddJwtKey},
};

void PrintPkiHelp(std::ostream& os) {
  os << "Usage: sigil pki COMMAND [flags]\n\nOffline PKI operations on a CA directory.\n\n"
        "Commands:\n";
  for (const auto& s : kSubcommands) {
    std::string name(s.name);
    name.resize(22, ' ');
    os << "  " << name << s.summary << "\n";
  }
  os << "\nRun 'sigil pki COMMAND --help' for a command's flags.\n";
}

}  // namespace

int RunPki(std::span<const std::string> args) {
  if (args.empty() || args[0] == "-h" || args[0] == "--help" || args[0] == "help") {
    PrintPkiHelp(args.empty() ? std::cerr : std::cout);
    return args.empty() ? kExitUsage : kExitOk;
  }
  for (const auto& s : kSubcommands) {
    if (args[0] == s.name) return s.run(args.subspan(1));
  }
  std::cerr << "sigil pki: unknown command \"" << args[0] << "\"\n\n";
  PrintPkiHelp(std::cerr);
  return kExitUsage;
}

}  // namespace sigil::cli
