// describe_dsn: apart from connection.cpp (Asio, coroutines) so that the fuzz target of DSN
// parsing (fuzz/fuzz_url.cpp) compiles only this.
#include "detail/dsn.hpp"

#include <memory>
#include <string_view>

namespace trading_shared::pg::detail {

std::string describe_dsn(const std::string& dsn) {
  char* err = nullptr;
  std::unique_ptr<PQconninfoOption, ConninfoDeleter> options(PQconninfoParse(dsn.c_str(), &err));
  if (!options) {
    if (err != nullptr) PQfreemem(err);
    return "<malformed dsn>";
  }
  std::string host = "localhost", port = "5432", dbname, user;
  for (auto* o = options.get(); o->keyword != nullptr; ++o) {
    if (o->val == nullptr) continue;
    const std::string_view key = o->keyword;
    if (key == "host") host = o->val;
    if (key == "port") port = o->val;
    if (key == "dbname") dbname = o->val;
    if (key == "user") user = o->val;
  }
  return host + ":" + port + "/" + dbname + (user.empty() ? "" : " as " + user);
}

}  // namespace trading_shared::pg::detail
