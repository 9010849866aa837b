/// @file
/// spdlog setup: one shared sink for every logger, text or JSON formatters that redact
/// secrets and keep every record on one line.

#include <trading_shared/core/config.hpp>
#include <trading_shared/core/logging.hpp>

#include <fmt/format.h>
#include <spdlog/details/log_msg.h>
#include <spdlog/sinks/dist_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <array>
#include <chrono>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <utility>

namespace trading_shared::core {
namespace {

constexpr std::string_view kMask = "***";

char to_lower(char c) noexcept {
  return (c >= 'A' && c <= 'Z') ? static_cast<char>(c - 'A' + 'a') : c;
}

bool is_alnum(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
}

bool is_blank(char c) noexcept {
  return c == ' ' || c == '\t';
}

bool is_space(char c) noexcept {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v';
}

/// Case-insensitive match of a lower-case word at `pos`.
bool matches_ci(std::string_view text, std::size_t pos, std::string_view lower_word) noexcept {
  if (text.size() - pos < lower_word.size()) {
    return false;
  }
  for (std::size_t k = 0; k < lower_word.size(); ++k) {
    if (to_lower(text[pos + k]) != lower_word[k]) {
      return false;
    }
  }
  return true;
}

template <class Out>
void append(Out& out, std::string_view s) {
  out.append(s.data(), s.data() + s.size());
}

/// Up to two ranges of `text` to mask, found at one trigger.
struct Match {
  std::array<std::pair<std::size_t, std::size_t>, 2> ranges{};
  std::size_t count = 0;
  void add(std::size_t begin, std::size_t end) noexcept {
    if (end > begin && count < ranges.size()) {
      ranges[count++] = {begin, end};
    }
  }
};

/// End of a quoted value starting at `begin` (on the quote), honouring backslash escapes as
/// libpq does; the end of the text if unterminated (mask it all rather than leak it).
std::size_t quoted_end(std::string_view text, std::size_t begin) noexcept {
  const char quote = text[begin];
  std::size_t k = begin + 1;
  while (k < text.size()) {
    if (text[k] == '\\' && k + 1 < text.size()) {
      k += 2;
    } else if (text[k] == quote) {
      return k + 1;
    } else {
      ++k;
    }
  }
  return text.size();
}

/// `password = value`, `password='v a l'`, and the JSON form `"password": "value"`.
Match match_password(std::string_view text, std::size_t pos) noexcept {
  Match m;
  std::size_t k = pos + 8;  // after "password"
  std::size_t n = text.size();
  if (k < n && (text[k] == '"' || text[k] == '\'')) {
    // JSON / dict form: only a quoted value after ':' (prose such as "password: wrong" stays).
    ++k;
    while (k < n && is_blank(text[k])) {
      ++k;
    }
    if (k >= n || text[k] != ':') {
      return m;
    }
    ++k;
    while (k < n && is_blank(text[k])) {
      ++k;
    }
    if (k < n && (text[k] == '"' || text[k] == '\'')) {
      m.add(k, quoted_end(text, k));
    }
    return m;
  }
  // libpq skips any white space (isspace: also \n, \r, \f, \v) around '=', so a password
  // after "password=\n" is a password (found by fuzz/fuzz_url).
  while (k < n && is_space(text[k])) {
    ++k;
  }
  if (k >= n || text[k] != '=') {
    return m;
  }
  ++k;
  while (k < n && is_space(text[k])) {
    ++k;
  }
  if (k >= n) {
    return m;
  }
  if (text[k] == '\'' || text[k] == '"') {
    m.add(k, quoted_end(text, k));
    return m;
  }
  // libpq's unquoted value: up to white space, a backslash escaping the next character (white
  // space included: "password=\\ x" is the password " x"; found by fuzz/fuzz_url).
  std::size_t end = k;
  while (end < n && !is_space(text[end])) {
    end += (text[end] == '\\' && end + 1 < n) ? 2 : 1;
  }
  m.add(k, std::min(end, n));
  return m;
}

/// `scheme://user:secret@host` at the "://" found at `pos`.
Match match_uri(std::string_view text, std::size_t pos) noexcept {
  Match m;
  const std::size_t begin = pos + 3;
  std::size_t end = begin;
  while (end < text.size()) {
    const char c = text[end];
    // libpq reads the userinfo up to the first '/' whatever it holds ('?', '#', quotes:
    // "postgresql://u?x:pw@h" has the password "pw"; found by fuzz/fuzz_url), so only '/' and
    // white space (which delimits free text) end it here. Masking too much is harmless.
    if (c == '/' || is_space(c)) {
      break;
    }
    ++end;
  }
  const std::string_view authority = text.substr(begin, end - begin);
  const std::size_t at = authority.rfind('@');
  if (at == std::string_view::npos) {
    return m;
  }
  const std::size_t colon = authority.substr(0, at).find(':');
  if (colon == std::string_view::npos) {
    return m;  // a user name only
  }
  m.add(begin + colon + 1, begin + at);
  return m;
}

/// Accepts a RESP line break, raw or as escaped text (`\r\n` written out), at `k`.
std::size_t resp_break(std::string_view text, std::size_t k) noexcept {
  if (text.substr(k, 2) == "\r\n") {
    return 2;
  }
  if (text.substr(k, 4) == "\\r\\n") {
    return 4;
  }
  return 0;
}

/// Redis `AUTH [user] pass`, inline or RESP-encoded, at the word found at `pos`.
Match match_auth(std::string_view text, std::size_t pos) noexcept {
  Match m;
  const std::size_t n = text.size();
  // A word on its own; an escaped line break (`\\n` written out) also separates words.
  const bool after_escaped_break = pos >= 2 && text.substr(pos - 2, 2) == "\\n";
  if (pos > 0 && (is_alnum(text[pos - 1]) || text[pos - 1] == '_') && !after_escaped_break) {
    return m;
  }
  std::size_t k = pos + 4;
  if (k >= n) {
    return m;
  }
  if (const std::size_t brk = resp_break(text, k); brk != 0) {
    // *3\r\n$4\r\nAUTH\r\n$4\r\nuser\r\n$6\r\nsecret\r\n
    k += brk;
    for (int arg = 0; arg < 2 && k < n && text[k] == '$'; ++arg) {
      std::size_t len = 0;
      std::size_t d = k + 1;
      while (d < n && text[d] >= '0' && text[d] <= '9') {
        len = len * 10 + static_cast<std::size_t>(text[d++] - '0');
      }
      const std::size_t line = resp_break(text, d);
      if (d == k + 1 || line == 0) {
        break;
      }
      const std::size_t value = d + line;
      const std::size_t value_end = std::min(n, value + len);
      m.add(value, value_end);
      k = value_end;
      const std::size_t next = k < n ? resp_break(text, k) : 0;
      if (next == 0) {
        break;
      }
      k += next;
    }
    return m;
  }
  if (!is_blank(text[k])) {
    return m;  // "authentication", "auth:", "auth=" are not commands
  }
  for (int arg = 0; arg < 2; ++arg) {
    while (k < n && is_blank(text[k])) {
      ++k;
    }
    const std::size_t begin = k;
    while (k < n && !is_space(text[k])) {
      ++k;
    }
    if (k == begin) {
      break;
    }
    m.add(begin, k);
  }
  return m;
}

template <class Out>
void redact_into(std::string_view text, Out& out) {
  std::size_t copied = 0;
  std::size_t i = 0;
  while (i < text.size()) {
    const char c = text[i];
    Match m;
    std::size_t skip = 1;
    if ((c == 'p' || c == 'P') && matches_ci(text, i, "password")) {
      m = match_password(text, i);
      skip = 8;
    } else if (c == ':' && text.substr(i, 3) == "://") {
      m = match_uri(text, i);
      skip = 3;
    } else if ((c == 'a' || c == 'A') && matches_ci(text, i, "auth")) {
      m = match_auth(text, i);
      skip = 4;
    }
    if (m.count == 0) {
      i += skip;
      continue;
    }
    for (std::size_t r = 0; r < m.count; ++r) {
      const auto [begin, end] = m.ranges[r];
      out.append(text.data() + copied, text.data() + begin);
      append(out, kMask);
      copied = end;
    }
    i = copied;
  }
  out.append(text.data() + copied, text.data() + text.size());
}

/// Length of the valid UTF-8 sequence at `pos`, or 0 if invalid.
std::size_t utf8_sequence(std::string_view s, std::size_t pos) noexcept {
  const auto byte = [&](std::size_t k) { return static_cast<unsigned char>(s[k]); };
  const unsigned char b0 = byte(pos);
  std::size_t len = 0;
  unsigned char lo = 0x80;
  unsigned char hi = 0xBF;
  if (b0 >= 0xC2 && b0 <= 0xDF) {
    len = 2;
  } else if (b0 >= 0xE0 && b0 <= 0xEF) {
    len = 3;
    if (b0 == 0xE0) {
      lo = 0xA0;  // overlong
    }
    if (b0 == 0xED) {
      hi = 0x9F;  // surrogates
    }
  } else if (b0 >= 0xF0 && b0 <= 0xF4) {
    len = 4;
    if (b0 == 0xF0) {
      lo = 0x90;  // overlong
    }
    if (b0 == 0xF4) {
      hi = 0x8F;  // > U+10FFFF
    }
  } else {
    return 0;
  }
  if (s.size() - pos < len) {
    return 0;
  }
  if (byte(pos + 1) < lo || byte(pos + 1) > hi) {
    return 0;
  }
  for (std::size_t k = 2; k < len; ++k) {
    if (byte(pos + k) < 0x80 || byte(pos + k) > 0xBF) {
      return 0;
    }
  }
  return len;
}

template <class Out>
void append_json_escaped(std::string_view s, Out& out) {
  constexpr char kHex[] = "0123456789abcdef";
  std::size_t i = 0;
  std::size_t plain = 0;  // start of the pending run that needs no escaping
  const auto flush = [&] { out.append(s.data() + plain, s.data() + i); };
  while (i < s.size()) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != '"' && c != '\\' && c < 0x80) {
      ++i;
      continue;
    }
    if (c >= 0x80) {
      if (const std::size_t len = utf8_sequence(s, i); len != 0) {
        i += len;
        continue;
      }
    }
    flush();
    switch (c) {
      case '"':
        append(out, "\\\"");
        break;
      case '\\':
        append(out, "\\\\");
        break;
      case '\n':
        append(out, "\\n");
        break;
      case '\r':
        append(out, "\\r");
        break;
      case '\t':
        append(out, "\\t");
        break;
      case '\b':
        append(out, "\\b");
        break;
      case '\f':
        append(out, "\\f");
        break;
      default:
        if (c >= 0x80) {
          append(out, "\\ufffd");  // invalid UTF-8 byte
        } else {
          const std::array<char, 6> escaped{'\\', 'u', '0', '0', kHex[c >> 4], kHex[c & 0xF]};
          out.append(escaped.data(), escaped.data() + escaped.size());
        }
    }
    ++i;
    plain = i;
  }
  flush();
}

/// Text records: control characters escaped so that one record stays one line; the rest
/// (quotes, backslashes, non-ASCII) is left for people to read.
template <class Out>
void append_text_escaped(std::string_view s, Out& out) {
  std::size_t plain = 0;
  for (std::size_t i = 0; i < s.size(); ++i) {
    const auto c = static_cast<unsigned char>(s[i]);
    if (c >= 0x20 && c != 0x7f) {
      continue;
    }
    if (c == '\t') {
      continue;
    }
    out.append(s.data() + plain, s.data() + i);
    if (c == '\n') {
      append(out, "\\n");
    } else if (c == '\r') {
      append(out, "\\r");
    } else {
      fmt::format_to(std::back_inserter(out), "\\x{:02x}", c);
    }
    plain = i + 1;
  }
  out.append(s.data() + plain, s.data() + s.size());
}

/// `2026-05-01T12:34:56.789Z`, caching the formatted second (records come in bursts).
class TimestampCache {
 public:
  void append_to(spdlog::log_clock::time_point tp, spdlog::memory_buf_t& out) {
    using std::chrono::duration_cast;
    const auto since_epoch = tp.time_since_epoch();
    auto seconds = duration_cast<std::chrono::seconds>(since_epoch);
    auto millis = duration_cast<std::chrono::milliseconds>(since_epoch - seconds).count();
    if (millis < 0) {  // before 1970: floor, not truncate
      seconds -= std::chrono::seconds(1);
      millis += 1000;
    }
    if (seconds.count() != cached_second_ || cached_.empty()) {
      const std::time_t t = static_cast<std::time_t>(seconds.count());
      std::tm tm{};
      gmtime_r(&t, &tm);
      cached_ = fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", tm.tm_year + 1900, tm.tm_mon + 1,
                            tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec);
      cached_second_ = seconds.count();
    }
    append(out, cached_);
    fmt::format_to(std::back_inserter(out), ".{:03}Z", millis);
  }

 private:
  std::int64_t cached_second_ = 0;
  std::string cached_;
};

class JsonFormatter final : public spdlog::formatter {
 public:
  explicit JsonFormatter(std::string service) : service_(std::move(service)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    append(dest, R"({"ts":")");
    timestamps_.append_to(msg.time, dest);
    append(dest, R"(","level":")");
    append(dest, log_level_name(msg.level));
    append(dest, R"(","service":")");
    append_json_escaped(service_, dest);
    if (msg.logger_name.size() != 0) {
      append(dest, R"(","component":")");
      append_json_escaped(std::string_view(msg.logger_name.data(), msg.logger_name.size()), dest);
    }
    append(dest, R"(","msg":")");
    spdlog::memory_buf_t redacted;
    redact_into(std::string_view(msg.payload.data(), msg.payload.size()), redacted);
    append_json_escaped(std::string_view(redacted.data(), redacted.size()), dest);
    append(dest, "\"}\n");
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<JsonFormatter>(service_);
  }

 private:
  std::string service_;
  TimestampCache timestamps_;
};

class TextFormatter final : public spdlog::formatter {
 public:
  explicit TextFormatter(std::string service) : service_(std::move(service)) {}

  void format(const spdlog::details::log_msg& msg, spdlog::memory_buf_t& dest) override {
    timestamps_.append_to(msg.time, dest);
    fmt::format_to(std::back_inserter(dest), " {:<5} ", log_level_name(msg.level));
    if (!service_.empty()) {
      append_text_escaped(service_, dest);
      dest.push_back(' ');
    }
    if (msg.logger_name.size() != 0) {
      dest.push_back('[');
      append_text_escaped(std::string_view(msg.logger_name.data(), msg.logger_name.size()), dest);
      append(dest, "] ");
    }
    spdlog::memory_buf_t redacted;
    redact_into(std::string_view(msg.payload.data(), msg.payload.size()), redacted);
    append_text_escaped(std::string_view(redacted.data(), redacted.size()), dest);
    dest.push_back('\n');
  }

  std::unique_ptr<spdlog::formatter> clone() const override {
    return std::make_unique<TextFormatter>(service_);
  }

 private:
  std::string service_;
  TimestampCache timestamps_;
};

/// The one sink every logger of ours writes to; `setup_logging` swaps what it forwards to.
struct LoggingState {
  LoggingState() : sink(std::make_shared<spdlog::sinks::dist_sink_mt>()) {
    sink->set_sinks({std::make_shared<spdlog::sinks::stderr_sink_mt>()});
    sink->set_formatter(std::make_unique<TextFormatter>(std::string()));
  }
  std::mutex mutex;
  std::shared_ptr<spdlog::sinks::dist_sink_mt> sink;
  std::shared_ptr<spdlog::logger> default_logger;
  spdlog::level::level_enum level = spdlog::level::info;
};

LoggingState& state() {
  static LoggingState instance;
  return instance;
}

}  // namespace

// ---- levels and formats
// --------------------------------------------------------------------------

spdlog::level::level_enum parse_log_level(std::string_view text) {
  std::string v(text);
  for (char& c : v) {
    c = to_lower(c);
  }
  if (v == "trace") {
    return spdlog::level::trace;
  }
  if (v == "debug") {
    return spdlog::level::debug;
  }
  if (v == "info") {
    return spdlog::level::info;
  }
  if (v == "warn" || v == "warning") {
    return spdlog::level::warn;
  }
  if (v == "error" || v == "err") {
    return spdlog::level::err;
  }
  if (v == "critical") {
    return spdlog::level::critical;
  }
  if (v == "off") {
    return spdlog::level::off;
  }
  throw std::invalid_argument("expected one of trace, debug, info, warn, error, critical, off");
}

std::string_view log_level_name(spdlog::level::level_enum level) noexcept {
  switch (level) {
    case spdlog::level::trace:
      return "trace";
    case spdlog::level::debug:
      return "debug";
    case spdlog::level::info:
      return "info";
    case spdlog::level::warn:
      return "warn";
    case spdlog::level::err:
      return "error";
    case spdlog::level::critical:
      return "critical";
    case spdlog::level::off:
    case spdlog::level::n_levels:
      break;
  }
  return "off";
}

LogFormat parse_log_format(std::string_view text) {
  std::string v(text);
  for (char& c : v) {
    c = to_lower(c);
  }
  if (v == "text") {
    return LogFormat::text;
  }
  if (v == "json") {
    return LogFormat::json;
  }
  throw std::invalid_argument("expected text or json");
}

std::string_view to_string(LogFormat format) noexcept {
  return format == LogFormat::json ? "json" : "text";
}

void add_log_settings(ConfigLoader& loader, LogConfig& config) {
  loader.add_custom({"log.level", "Minimum level of log records.", false},
                    {"trace|debug|info|warn|error|critical|off",
                     [&config](std::string_view v) { config.level = parse_log_level(v); },
                     [&config] { return std::string(log_level_name(config.level)); }});
  loader.add_custom(
      {"log.format", "Format of log records on stderr.", false},
      {"text|json", [&config](std::string_view v) { config.format = parse_log_format(v); },
       [&config] { return std::string(to_string(config.format)); }});
}

// ---- setup
// -----------------------------------------------------------------------------------------

std::unique_ptr<spdlog::formatter> make_log_formatter(const LogConfig& config) {
  if (config.format == LogFormat::json) {
    return std::make_unique<JsonFormatter>(config.service_name);
  }
  return std::make_unique<TextFormatter>(config.service_name);
}

void setup_logging(const LogConfig& config) {
  setup_logging(config, std::make_shared<spdlog::sinks::stderr_sink_mt>());
}

void setup_logging(const LogConfig& config, spdlog::sink_ptr sink) {
  auto& st = state();
  const std::lock_guard lock(st.mutex);
  st.sink->set_sinks({std::move(sink)});
  st.sink->set_formatter(make_log_formatter(config));
  st.level = config.level;
  if (!st.default_logger || spdlog::default_logger() != st.default_logger) {
    st.default_logger = std::make_shared<spdlog::logger>("", st.sink);
    spdlog::set_default_logger(st.default_logger);
  }
  // Applies to every registered logger (ours and others') and is the registry's default.
  spdlog::set_level(config.level);
}

std::shared_ptr<spdlog::logger> logger(std::string_view component) {
  if (component.empty()) {
    return spdlog::default_logger();
  }
  auto& st = state();
  const std::lock_guard lock(st.mutex);
  std::string name(component);
  if (auto existing = spdlog::get(name)) {
    return existing;
  }
  auto created = std::make_shared<spdlog::logger>(std::move(name), st.sink);
  created->set_level(st.level);
  spdlog::register_logger(created);
  return created;
}

// ---- redaction and escaping
// ------------------------------------------------------------------------

std::string redact_secrets(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  redact_into(text, out);
  return out;
}

void redact_secrets_to(std::string_view text, spdlog::memory_buf_t& out) {
  redact_into(text, out);
}

std::string json_escape(std::string_view text) {
  std::string out;
  out.reserve(text.size());
  append_json_escaped(text, out);
  return out;
}

}  // namespace trading_shared::core
