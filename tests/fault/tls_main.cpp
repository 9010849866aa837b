// The servers of tls_fault_test are TLS-only (ServerOptions::tls): Redis on a TLS port only,
// PostgreSQL with ssl = on and hostssl lines, PgBouncer requiring TLS on both hops. Set once,
// before anything starts them; the tests of tls_*_test.cpp share them.

#include "support/server_harness.hpp"

namespace {

[[maybe_unused]] const bool kTlsServerOptionsSet = [] {
  trading_shared::testing::ServerOptions options;
  options.tls = true;
  trading_shared::testing::Servers::set_options(std::move(options));
  return true;
}();

}  // namespace
