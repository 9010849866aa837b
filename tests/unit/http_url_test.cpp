// ts_http's pure parts: URL parsing, Retry-After, HTTP status classification (docs/http.md).
#include <trading_shared/core/error.hpp>
#include <trading_shared/http/http_client.hpp>
#include <trading_shared/http/http_status.hpp>

#include <gtest/gtest.h>

#include <string>

namespace ts = trading_shared;
using namespace std::chrono_literals;

namespace {

std::string refusal(const std::string& url) {
  try {
    (void)ts::http::parse_http_url(url);
  } catch (const ts::Error& e) {
    EXPECT_EQ(e.code(), ts::make_error_code(ts::errc::invalid_argument));
    return e.what();
  }
  return "";
}

TEST(HttpUrl, ParsesHostPortAndTarget) {
  auto u = ts::http::parse_http_url("http://127.0.0.1:9443");
  EXPECT_EQ(u.host, "127.0.0.1");
  EXPECT_EQ(u.port, "9443");
  EXPECT_EQ(u.target, "/");
  u = ts::http::parse_http_url("http://venue.example/api?x=1");
  EXPECT_EQ(u.host, "venue.example");
  EXPECT_EQ(u.port, "80");
  EXPECT_EQ(u.target, "/api?x=1");
  u = ts::http::parse_http_url("http://[::1]:8080?q");
  EXPECT_EQ(u.host, "::1");
  EXPECT_EQ(u.port, "8080");
  EXPECT_EQ(u.target, "/?q");
}

TEST(HttpUrl, HttpsIsTlsOnPort443) {
  auto u = ts::http::parse_http_url("https://api.binance.com");
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.host, "api.binance.com");
  EXPECT_EQ(u.port, "443");
  EXPECT_EQ(u.target, "/");
  u = ts::http::parse_http_url("https://[::1]:9443/api");
  EXPECT_TRUE(u.tls);
  EXPECT_EQ(u.port, "9443");
  EXPECT_FALSE(ts::http::parse_http_url("http://h").tls);
  ts::http::HttpClientConfig config;
  config.base_url = "http://127.0.0.1:9443";
  config.tls.ca_file = "/etc/ca.pem";
  EXPECT_THROW(ts::http::validate(config), ts::Error) << "TLS settings with an http:// URL";
  config.base_url = "https://127.0.0.1:9443";
  EXPECT_NO_THROW(ts::http::validate(config));
  config.tls.cert_file = "/etc/client.pem";  // without its key
  EXPECT_THROW(ts::http::validate(config), ts::Error);
}

TEST(HttpUrl, RefusesWithAClearReason) {
  EXPECT_NE(refusal("ws://host").find("must start with http:// or https://"), std::string::npos);
  EXPECT_NE(refusal("https://user:pw@host").find("credentials"), std::string::npos);
  EXPECT_NE(refusal("http://user:pw@host").find("credentials"), std::string::npos);
  EXPECT_NE(refusal("http://:80/").find("empty host"), std::string::npos);
  EXPECT_NE(refusal("http://host:0").find("bad port"), std::string::npos);
  EXPECT_NE(refusal("http://host:99999").find("bad port"), std::string::npos);
  EXPECT_NE(refusal("http://host:12x").find("bad port"), std::string::npos);
  EXPECT_NE(refusal("http://host:").find("empty port"), std::string::npos);
  EXPECT_NE(refusal("http://[::1").find("unterminated"), std::string::npos);
  EXPECT_NE(refusal("http://host/a b").find("blank"), std::string::npos);
  EXPECT_NE(refusal("http://host/#frag").find("fragment"), std::string::npos);
}

TEST(HttpStatus, ClassifiesAsTheLibraryContractSays) {
  using K = ts::ErrorKind;
  EXPECT_EQ(ts::http::classify_http_status(400), K::permanent);
  EXPECT_EQ(ts::http::classify_http_status(401), K::permanent);
  EXPECT_EQ(ts::http::classify_http_status(404), K::permanent);
  EXPECT_EQ(ts::http::classify_http_status(408), K::transient_unavailable);
  EXPECT_EQ(ts::http::classify_http_status(429), K::transient_unavailable);
  EXPECT_EQ(ts::http::classify_http_status(418), K::transient_unavailable);
  EXPECT_EQ(ts::http::classify_http_status(500), K::transient_unavailable);
  EXPECT_EQ(ts::http::classify_http_status(503), K::transient_unavailable);
  EXPECT_EQ(ts::http::classify_http_status(599), K::transient_unavailable);
  EXPECT_TRUE(ts::http::is_throttle_status(429));
  EXPECT_TRUE(ts::http::is_throttle_status(418));
  EXPECT_FALSE(ts::http::is_throttle_status(503));
  EXPECT_EQ(ts::classify(ts::make_error_code(ts::errc::response_too_large), ts::RequestState::sent),
            K::permanent);
}

TEST(HttpStatus, RetryAfterInSeconds) {
  EXPECT_EQ(ts::http::parse_retry_after("120"), 120000ms);
  EXPECT_EQ(ts::http::parse_retry_after(" 0 "), 0ms);
  EXPECT_EQ(ts::http::parse_retry_after("999999999"), 86400000ms) << "capped at a day";
  EXPECT_EQ(ts::http::parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), std::nullopt);
  EXPECT_EQ(ts::http::parse_retry_after(""), std::nullopt);
  EXPECT_EQ(ts::http::parse_retry_after("-1"), std::nullopt);
}

TEST(HttpStatus, ThrowForStatusCarriesTheStatusAndRetryAfter) {
  ts::http::HttpResponse r;
  r.status = 200;
  EXPECT_NO_THROW(ts::http::throw_for_status(r, "x"));
  r.status = 429;
  r.headers = {{"retry-after", "7"}};
  r.body = "slow down";
  try {
    ts::http::throw_for_status(r, "historicalTrades");
    ADD_FAILURE();
  } catch (const ts::Error& e) {
    EXPECT_EQ(ts::http::http_status(e), 429u);
    EXPECT_EQ(e.retry_after(), 7000ms);
    EXPECT_EQ(e.kind(), ts::ErrorKind::transient_unavailable);
    EXPECT_TRUE(std::string(e.what()).starts_with("historicalTrades: HTTP 429: slow down"))
        << e.what();
  }
}

}  // namespace
