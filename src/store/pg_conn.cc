#include "store/pg_conn.h"

#include <array>
#include <cstring>
#include <utility>

#include "store/query_count.h"
#include "store/store_common.h"

namespace sigil::store::internal {
namespace {

// Type OIDs of the built-in types we use (fixed in PostgreSQL's catalog; the server-side
// header that names them is not part of libpq-dev).
constexpr Oid kBoolOid = 16;
constexpr Oid kByteaOid = 17;
constexpr Oid kInt8Oid = 20;
constexpr Oid kInt2Oid = 21;
constexpr Oid kInt4Oid = 23;
constexpr Oid kTextOid = 25;
constexpr Oid kTimestamptzOid = 1184;

// timestamptz travels as int64 microseconds since 2000-01-01 00:00:00 UTC.
constexpr int64_t kPgEpochMicros = int64_t{946684800} * 1000000;

std::string BigEndian(uint64_t v, int bytes) {
  std::string out(static_cast<size_t>(bytes), '\0');
  for (int i = bytes - 1; i >= 0; --i) {
    out[static_cast<size_t>(i)] = static_cast<char>(v & 0xff);
    v >>= 8;
  }
  return out;
}

int64_t FromBigEndian(const char* p, int len) {
  uint64_t v = 0;
  for (int i = 0; i < len; ++i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  // Sign-extend 2- and 4-byte integers.
  if (len < 8 && len > 0 && (static_cast<uint8_t>(p[0]) & 0x80) != 0) {
    v |= ~uint64_t{0} << (8 * len);
  }
  return static_cast<int64_t>(v);
}

std::string FirstLine(const char* text) {
  if (text == nullptr) return "unknown error";
  std::string s(text);
  if (auto nl = s.find('\n'); nl != std::string::npos) s.resize(nl);
  return s.empty() ? "unknown error" : s;
}

void IgnoreNotice(void* /*arg*/, const char* /*message*/) {}

}  // namespace

// --- PgParams ---

void PgParams::Add(unsigned int type, std::string bytes, bool null) {
  types_.push_back(type);
  values_.push_back(std::move(bytes));
  nulls_.push_back(null);
}

PgParams& PgParams::Int(int64_t v) {
  Add(kInt8Oid, BigEndian(static_cast<uint64_t>(v), 8), false);
  return *this;
}
PgParams& PgParams::Text(std::string_view s) {
  Add(kTextOid, std::string(s), false);
  return *this;
}
PgParams& PgParams::Bytes(std::span<const uint8_t> b) {
  Add(kByteaOid, std::string(b.begin(), b.end()), false);
  return *this;
}
PgParams& PgParams::Time(TimePoint t) {
  Add(kTimestamptzOid, BigEndian(static_cast<uint64_t>(ToMicros(t) - kPgEpochMicros), 8), false);
  return *this;
}
PgParams& PgParams::Bool(bool b) {
  Add(kBoolOid, std::string(1, b ? '\1' : '\0'), false);
  return *this;
}
PgParams& PgParams::OptInt(std::optional<int64_t> v) {
  if (v) return Int(*v);
  Add(kInt8Oid, {}, true);
  return *this;
}
PgParams& PgParams::OptText(const std::optional<std::string>& s) {
  if (s) return Text(*s);
  Add(kTextOid, {}, true);
  return *this;
}
PgParams& PgParams::OptTime(std::optional<TimePoint> t) {
  if (t) return Time(*t);
  Add(kTimestamptzOid, {}, true);
  return *this;
}

// --- PgResult ---

int PgResult::rows() const { return PQntuples(res_.get()); }
bool PgResult::IsNull(int row, int col) const { return PQgetisnull(res_.get(), row, col) != 0; }

int64_t PgResult::Int(int row, int col) const {
  if (IsNull(row, col)) return 0;
  return FromBigEndian(PQgetvalue(res_.get(), row, col), PQgetlength(res_.get(), row, col));
}

std::string PgResult::Text(int row, int col) const {
  if (IsNull(row, col)) return {};
  return {PQgetvalue(res_.get(), row, col), static_cast<size_t>(PQgetlength(res_.get(), row, col))};
}

std::vector<uint8_t> PgResult::Bytes(int row, int col) const {
  if (IsNull(row, col)) return {};
  const auto* p = reinterpret_cast<const uint8_t*>(PQgetvalue(res_.get(), row, col));
  return {p, p + PQgetlength(res_.get(), row, col)};
}

TimePoint PgResult::Time(int row, int col) const {
  return FromMicros(Int(row, col) + kPgEpochMicros);
}

bool PgResult::Bool(int row, int col) const {
  return !IsNull(row, col) && PQgetlength(res_.get(), row, col) == 1 &&
         PQgetvalue(res_.get(), row, col)[0] != 0;
}

std::optional<int64_t> PgResult::OptInt(int row, int col) const {
  if (IsNull(row, col)) return std::nullopt;
  return Int(row, col);
}

std::optional<TimePoint> PgResult::OptTime(int row, int col) const {
  if (IsNull(row, col)) return std::nullopt;
  return Time(row, col);
}

int64_t PgResult::Affected() const {
  const char* n = PQcmdTuples(res_.get());
  return n == nullptr || *n == '\0' ? 0 : std::strtoll(n, nullptr, 10);
}

// --- PgConnection ---

Result<std::unique_ptr<PgConnection>> PgConnection::Connect(const std::string& conninfo,
                                                            const std::string& display,
                                                            const PgSessionSettings& settings) {
  // Our defaults come first: a value in the URL (processed later) overrides them. Without a
  // connect_timeout libpq would wait for an unreachable host indefinitely; the keepalive and
  // TCP user timeouts bound how long a silently dead peer (a crashed host, a dropped NAT
  // entry) goes unnoticed, notably on the otherwise idle LISTEN connection. Unix sockets
  // ignore them.
  const std::string timeout =
      std::to_string(std::max<int64_t>(settings.connect_timeout.count(), 2));
  const std::array<const char*, 8> keys = {
      "connect_timeout",  "fallback_application_name", "keepalives_idle", "keepalives_interval",
      "keepalives_count", "tcp_user_timeout",          "dbname",          nullptr};
  const std::array<const char*, 8> values = {timeout.c_str(), "sigil",          "30",   "10", "3",
                                             "60000",         conninfo.c_str(), nullptr};
  PGconn* raw = PQconnectdbParams(keys.data(), values.data(), /*expand_dbname=*/1);
  if (raw == nullptr) return Unavailable("postgres: " + display + ": out of memory connecting");
  std::unique_ptr<PgConnection> conn(new PgConnection(raw, display));  // NOLINT: private ctor
  if (PQstatus(raw) != CONNECTION_OK) {
    return Unavailable("postgres: " + display + ": connect: " + FirstLine(PQerrorMessage(raw)));
  }
  PQsetNoticeProcessor(raw, IgnoreNotice, nullptr);  // e.g. "relation already exists, skipping"
  // Binary timestamps are int64 µs only with integer datetimes (the only build since 10).
  const char* int_dt = PQparameterStatus(raw, "integer_datetimes");
  if (int_dt == nullptr || std::strcmp(int_dt, "on") != 0) {
    return FailedPrecondition("postgres: " + display + ": server without integer datetimes");
  }
  // Text is stored as the caller's bytes: the database must hold UTF-8 (or be byte-transparent).
  const char* enc = PQparameterStatus(raw, "server_encoding");
  if (enc == nullptr || (std::strcmp(enc, "UTF8") != 0 && std::strcmp(enc, "SQL_ASCII") != 0)) {
    return FailedPrecondition("postgres: " + display + ": database encoding " +
                              (enc != nullptr ? enc : "unknown") + " (Sigil needs UTF8)");
  }
  // synchronous_commit=off would acknowledge commits before they are durable, breaking the
  // Store contract; stronger settings (remote_write, remote_apply) are kept.
  const std::string setup = "SET client_encoding = 'UTF8'; SET lock_timeout = " +
                            std::to_string(settings.lock_timeout.count()) +
                            "; SET idle_in_transaction_session_timeout = " +
                            std::to_string(settings.idle_in_transaction_timeout.count()) +
                            "; SELECT set_config('synchronous_commit', 'on', false)"
                            " WHERE current_setting('synchronous_commit') = 'off'";
  SIGIL_TRY(conn->Exec("session setup", setup.c_str()));
  return conn;
}

PgConnection::~PgConnection() { PQfinish(conn_); }

bool PgConnection::healthy() const { return PQstatus(conn_) == CONNECTION_OK; }

Error PgConnection::Fail(std::string_view what, const PGresult* res) {
  const char* state = res != nullptr ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : nullptr;
  last_sqlstate_ = state != nullptr ? state : "";
  const std::string_view s = last_sqlstate_;
  std::string prefix = "postgres: ";
  prefix += what;
  prefix += ": ";
  // Errors the server reports carry a SQLSTATE; one without is libpq's own ("server closed the
  // connection unexpectedly", "could not send data"), seen while PQstatus may still say OK.
  if (!healthy() || s.empty() || s.starts_with("08") || s == "57P01" || s == "57P02" ||
      s == "57P03") {
    return Unavailable("postgres: " + display_ + ": " + std::string(what) +
                       ": connection lost: " + FirstLine(PQerrorMessage(conn_)));
  }
  // Only the primary message: DETAIL lines can quote row values (specs, hashes).
  const char* primary = res != nullptr ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : nullptr;
  std::string msg = prefix + FirstLine(primary != nullptr ? primary : PQerrorMessage(conn_));
  if (!s.empty()) msg += " (SQLSTATE " + last_sqlstate_ + ")";
  if (s == "40001" || s == "40P01") {
    last_retryable_ = true;
    return Error(ErrorCode::kAborted, std::move(msg));
  }
  if (s == "22021" || s == "22P05") {
    // The primary message quotes the offending bytes; name the step only.
    return InvalidArgument(prefix + "a text value is not valid UTF-8 or contains a NUL byte");
  }
  if (s == "55P03" || s == "57014" || s.starts_with("53")) return Unavailable(std::move(msg));
  return Internal(std::move(msg));
}

Result<PgResult> PgConnection::Check(std::string_view what, PGresult* res) {
  const ExecStatusType st = res != nullptr ? PQresultStatus(res) : PGRES_FATAL_ERROR;
  if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) return PgResult(res);
  Error e = Fail(what, res);
  PQclear(res);
  return e;
}

Result<PgResult> PgConnection::Query(std::string_view what, const std::string& sql,
                                     const PgParams& params) {
  last_sqlstate_.clear();
  last_retryable_ = false;
  const int n = static_cast<int>(params.size());
  auto it = prepared_.find(sql);
  if (it == prepared_.end()) {
    std::string name = "sigil_" + std::to_string(prepared_.size() + 1);
    CountQuery();
    SIGIL_TRY(Check(what, PQprepare(conn_, name.c_str(), sql.c_str(), n, params.types_.data())));
    it = prepared_.emplace(sql, std::move(name)).first;
  }
  std::vector<const char*> values(params.size());
  std::vector<int> lengths(params.size());
  std::vector<int> formats(params.size(), 1);
  for (size_t i = 0; i < params.size(); ++i) {
    values[i] = params.nulls_[i] ? nullptr : params.values_[i].data();
    lengths[i] = static_cast<int>(params.values_[i].size());
  }
  CountQuery();
  return Check(what, PQexecPrepared(conn_, it->second.c_str(), n, values.data(), lengths.data(),
                                    formats.data(), /*resultFormat=*/1));
}

Result<void> PgConnection::Exec(std::string_view what, const char* sql) {
  last_sqlstate_.clear();
  last_retryable_ = false;
  CountQuery();
  SIGIL_TRY(Check(what, PQexec(conn_, sql)));
  return Ok();
}

std::string PgDisplayName(const std::string& conninfo) {
  char* err = nullptr;
  PQconninfoOption* opts = PQconninfoParse(conninfo.c_str(), &err);
  if (err != nullptr) PQfreemem(err);
  if (opts == nullptr) return "postgres://(unparsable URL)";
  std::string user, host, port, db;
  for (PQconninfoOption* o = opts; o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const std::string_view k = o->keyword;
    if (k == "user") user = o->val;
    if (k == "host" || (k == "hostaddr" && host.empty())) host = o->val;
    if (k == "port") port = o->val;
    if (k == "dbname") db = o->val;
  }
  PQconninfoFree(opts);
  std::string out = "postgres://";
  if (!user.empty()) out += user + "@";
  out += host.empty() ? "localhost" : host;
  if (!port.empty()) out += ":" + port;
  out += "/" + db;
  return out;
}

}  // namespace sigil::store::internal
