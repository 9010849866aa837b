#include "detail/statement_cache.hpp"

#include <trading_shared/pg/sql_state.hpp>

#include <cstring>
#include <functional>
#include <string>
#include <utility>

namespace trading_shared::pg::detail {

std::size_t StatementCache::Hash::operator()(const Key& key) const noexcept {
  std::size_t h = std::hash<std::string_view>{}(key.sql);
  for (int i = 0; i < key.count; ++i) h = h * 31 + key.types[i];
  return h;
}

std::size_t StatementCache::Hash::operator()(const std::string& key) const noexcept {
  // `sql '\0' types` (the text holds no NUL: it is a C string); the same hash as above.
  const auto nul = key.find('\0');
  const std::size_t sql_size = nul == std::string::npos ? key.size() : nul;
  std::size_t h = std::hash<std::string_view>{}(std::string_view(key.data(), sql_size));
  for (std::size_t at = sql_size + 1; at + sizeof(Oid) <= key.size(); at += sizeof(Oid)) {
    Oid type = 0;
    std::memcpy(&type, key.data() + at, sizeof(Oid));
    h = h * 31 + type;
  }
  return h;
}

bool StatementCache::Equal::operator()(const Key& a, const std::string& b) const noexcept {
  const std::size_t types_size = static_cast<std::size_t>(a.count) * sizeof(Oid);
  return b.size() == a.sql.size() + 1 + types_size && b.compare(0, a.sql.size(), a.sql) == 0 &&
         b[a.sql.size()] == '\0' &&
         (types_size == 0 || std::memcmp(b.data() + a.sql.size() + 1, a.types, types_size) == 0);
}

bool StatementCache::send(PGconn* conn, const Statement& statement) {
  const ParamBuffer* p = statement.params;
  const int count = p != nullptr ? p->count() : 0;
  const Oid* types = p != nullptr ? p->types() : nullptr;
  // Statements of the client's own (BEGIN, COMMIT, SET LOCAL ...) carry no ParamBuffer and
  // stay unnamed; so does everything when the cache is off or full.
  if (capacity_ > 0 && p != nullptr) {
    const Key key{statement.sql, types, count};
    auto it = statements_.find(key);
    if (it == statements_.end() && statements_.size() < capacity_) {
      std::string stored(key.sql);
      stored.push_back('\0');
      stored.append(reinterpret_cast<const char*>(types),
                    static_cast<std::size_t>(count) * sizeof(Oid));
      it = statements_.emplace(std::move(stored), Prepared{}).first;
    }
    if (it != statements_.end()) {
      Prepared& entry = it->second;
      bool named = entry.state == Prepared::State::ready;
      if (entry.state == Prepared::State::unprepared) {
        // A new name each time: an invalidated statement still exists under its old one.
        entry.name = "ts_" + std::to_string(++names_);
        if (PQsendPrepare(conn, entry.name.c_str(), statement.sql, count, types) != 1) {
          return false;
        }
        entry.state = Prepared::State::preparing;
        prepare_marks_.push_back({results_queued_++, &entry});
        named = true;  // right behind its Parse, in the same pipeline segment
      }
      // While another request's Parse is still on its way, the name may not exist yet (that
      // Parse may fail): unnamed until it is known to exist.
      if (named) {
        if (PQsendQueryPrepared(conn, entry.name.c_str(), count, p->values(), p->lengths(),
                                p->formats(), 1) != 1) {
          return false;
        }
        ++results_queued_;
        return true;
      }
    }
  }
  if (PQsendQueryParams(conn, statement.sql, count, types, p != nullptr ? p->values() : nullptr,
                        p != nullptr ? p->lengths() : nullptr,
                        p != nullptr ? p->formats() : nullptr, 1) != 1) {
    return false;
  }
  ++results_queued_;
  return true;
}

bool StatementCache::take_result(ExecStatusType status) noexcept {
  const std::uint64_t position = results_read_++;
  if (prepare_marks_.empty() || prepare_marks_.front().position != position) return false;
  Prepared* entry = prepare_marks_.front().statement;
  prepare_marks_.pop_front();
  // COMMAND_OK: the name exists from now on. FATAL_ERROR (the text does not parse) or
  // PIPELINE_ABORTED (an earlier statement of the segment failed): it does not.
  entry->state = status == PGRES_COMMAND_OK ? Prepared::State::ready : Prepared::State::unprepared;
  return true;
}

void StatementCache::on_statement_error(const PGresult* result) noexcept {
  if (statements_.empty()) return;
  // DDL changed what a prepared statement returns (0A000 "cached plan must not change result
  // type"; other 0A000 errors are unrelated), or the application's DISCARD ALL / DEALLOCATE
  // dropped our names (26000): prepare every statement anew, under new names, from now on.
  // The old names stay in the session until it ends.
  const char* state = PQresultErrorField(result, PG_DIAG_SQLSTATE);
  const char* message = PQresultErrorField(result, PG_DIAG_MESSAGE_PRIMARY);
  const std::string_view code = state != nullptr ? state : "";
  const bool plan_changed =
      code == sqlstate::feature_not_supported && message != nullptr &&
      std::string_view(message).find("cached plan must not change result type") !=
          std::string_view::npos;
  if (!plan_changed && code != sqlstate::invalid_sql_statement_name) return;
  for (auto& entry : statements_) {
    if (entry.second.state == Prepared::State::ready) {
      entry.second.state = Prepared::State::unprepared;
    }
  }
}

}  // namespace trading_shared::pg::detail
