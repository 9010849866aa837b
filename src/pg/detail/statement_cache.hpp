#pragma once
/// @file
/// The per-connection statement cache (`PostgresConfig::statement_cache_size`, internal):
/// statements with parameters prepared under a name and kept, so that the server parses and
/// plans each once per connection. The cache sends every statement of its connection (named
/// or unnamed) and counts the results queued and read, so that the result of each Parse it
/// queued is recognised in the pipeline when it comes.

#include <trading_shared/pg/params.hpp>

#include <libpq-fe.h>

#include <cstddef>
#include <cstdint>
#include <deque>
#include <string>
#include <string_view>
#include <unordered_map>

namespace trading_shared::pg::detail {

/// One statement of a request.
struct Statement {
  const char* sql = nullptr;
  const ParamBuffer* params = nullptr;  // null: no parameters
};

class StatementCache {
 public:
  /// Up to `size` statements named (0: off, every statement unnamed). No eviction: the first
  /// `size` distinct statements (text and parameter types) stay named.
  void set_capacity(std::size_t size) noexcept { capacity_ = size; }

  /// Queues one statement on `conn` (pipeline mode): named (its Parse queued before it when
  /// it is new to the cache) or unnamed. False when libpq refused it (see PQerrorMessage).
  bool send(PGconn* conn, const Statement& statement);

  /// Called for every result of a statement or Parse (not for Syncs and notices), in order:
  /// true when it is the result of a Parse the cache queued (no statement's result).
  bool take_result(ExecStatusType status) noexcept;

  /// A statement failed with `result`: when DDL changed what a prepared statement returns
  /// (0A000 "cached plan must not change result type") or the application's DISCARD ALL /
  /// DEALLOCATE dropped the names (26000), every statement is prepared anew, under new
  /// names, from now on (the old names stay in the session until it ends).
  void on_statement_error(const PGresult* result) noexcept;

 private:
  /// A statement prepared (or being prepared) under a name.
  struct Prepared {
    std::string name;
    enum class State : std::uint8_t { unprepared, preparing, ready } state = State::unprepared;
  };
  /// Key of the cache: the text and the parameter types.
  struct Key {
    std::string_view sql;
    const Oid* types;
    int count;
  };
  struct Hash {
    using is_transparent = void;
    std::size_t operator()(const Key& key) const noexcept;
    std::size_t operator()(const std::string& key) const noexcept;
  };
  struct Equal {
    using is_transparent = void;
    bool operator()(const std::string& a, const std::string& b) const noexcept { return a == b; }
    bool operator()(const Key& a, const std::string& b) const noexcept;
    bool operator()(const std::string& a, const Key& b) const noexcept { return (*this)(b, a); }
  };
  struct PrepareMark {
    std::uint64_t position;
    Prepared* statement;
  };

  std::size_t capacity_ = 0;
  /// Keyed by `sql '\0' types`; nodes are stable, so `prepare_marks_` may point into it.
  std::unordered_map<std::string, Prepared, Hash, Equal> statements_;
  std::uint64_t names_ = 0;
  /// Results queued (statements and Parses, not Syncs) and results read, counted so that the
  /// result of each Parse in `prepare_marks_` is recognised when it comes.
  std::uint64_t results_queued_ = 0;
  std::uint64_t results_read_ = 0;
  std::deque<PrepareMark> prepare_marks_;
};

}  // namespace trading_shared::pg::detail
