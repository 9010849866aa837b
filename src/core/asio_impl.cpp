// The one translation unit that compiles Boost.Asio (BOOST_ASIO_SEPARATE_COMPILATION),
// its SSL layer included (ts_asio links OpenSSL: core/tls_context.hpp, docs/redis.md "TLS").
#include <boost/asio/impl/src.hpp>
#include <boost/asio/ssl/impl/src.hpp>
