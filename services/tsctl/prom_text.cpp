// The Prometheus text format parser of tsctl status-page (prom_text.hpp).
#include "tsctl/prom_text.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <charconv>
#include <cmath>
#include <limits>
#include <optional>

namespace trading_shared::services::tsctl {

namespace {

bool is_name_start(char c) noexcept {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':';
}
bool is_name_char(char c) noexcept {
  return is_name_start(c) || (c >= '0' && c <= '9');
}
bool is_blank(char c) noexcept {
  return c == ' ' || c == '\t';
}

std::optional<double> parse_value(std::string_view text) noexcept {
  if (text == "+Inf" || text == "Inf") return std::numeric_limits<double>::infinity();
  if (text == "-Inf") return -std::numeric_limits<double>::infinity();
  if (text == "NaN") return std::numeric_limits<double>::quiet_NaN();
  if (!text.empty() && text.front() == '+') text.remove_prefix(1);
  double value = 0;
  const auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  if (ec != std::errc{} || end != text.data() + text.size()) return std::nullopt;
  return value;
}

/// One line's reader: a cursor over the line and the line's number for the errors.
class LineReader {
 public:
  LineReader(std::string_view line, std::size_t number) : line_(line), number_(number) {}

  [[noreturn]] void fail(std::string_view what) const {
    throw PromParseError(fmt::format("line {}: {} in \"{}\"", number_, what, line_));
  }
  bool at_end() const noexcept { return pos_ >= line_.size(); }
  char peek() const noexcept { return at_end() ? '\0' : line_[pos_]; }
  void skip_blanks() noexcept {
    while (!at_end() && is_blank(line_[pos_])) ++pos_;
  }
  std::string_view name() {
    const std::size_t start = pos_;
    if (at_end() || !is_name_start(line_[pos_])) fail("expected a metric or label name");
    while (!at_end() && is_name_char(line_[pos_])) ++pos_;
    return line_.substr(start, pos_ - start);
  }
  void expect(char c, std::string_view what) {
    if (peek() != c) fail(what);
    ++pos_;
  }
  std::string quoted() {
    expect('"', "expected '\"' to open a label value");
    std::string value;
    while (true) {
      if (at_end()) fail("unterminated label value");
      const char c = line_[pos_++];
      if (c == '"') return value;
      if (c != '\\') {
        value += c;
        continue;
      }
      if (at_end()) fail("unterminated escape in a label value");
      const char e = line_[pos_++];
      if (e == 'n') {
        value += '\n';
      } else if (e == '\\' || e == '"') {
        value += e;
      } else {
        fail("unknown escape in a label value");
      }
    }
  }
  std::string_view word() {
    const std::size_t start = pos_;
    while (!at_end() && !is_blank(line_[pos_])) ++pos_;
    return line_.substr(start, pos_ - start);
  }
  std::string_view rest() const noexcept { return line_.substr(std::min(pos_, line_.size())); }

 private:
  std::string_view line_;
  std::size_t number_;
  std::size_t pos_ = 0;
};

void parse_comment(LineReader& reader, PromScrape& out) {
  reader.expect('#', "expected '#'");
  reader.skip_blanks();
  const std::string_view keyword = reader.word();
  if (keyword != "TYPE" && keyword != "HELP") return;  // any other comment
  reader.skip_blanks();
  const std::string family(reader.name());
  if (keyword == "HELP") return;  // the help text is not shown
  reader.skip_blanks();
  const std::string_view type = reader.word();
  if (type != "counter" && type != "gauge" && type != "histogram" && type != "summary" &&
      type != "untyped") {
    reader.fail(fmt::format("unknown metric type \"{}\"", type));
  }
  if (!out.types.emplace(family, std::string(type)).second) {
    reader.fail(fmt::format("second TYPE line for \"{}\"", family));
  }
}

PromSample parse_sample(LineReader& reader) {
  PromSample sample;
  sample.name = std::string(reader.name());
  reader.skip_blanks();
  if (reader.peek() == '{') {
    reader.expect('{', "expected '{'");
    while (true) {
      reader.skip_blanks();
      if (reader.peek() == '}') break;
      std::string label(reader.name());
      reader.skip_blanks();
      reader.expect('=', "expected '=' after a label name");
      reader.skip_blanks();
      std::string value = reader.quoted();
      const bool duplicate = std::any_of(sample.labels.begin(), sample.labels.end(),
                                         [&](const auto& l) { return l.first == label; });
      if (duplicate) reader.fail(fmt::format("label \"{}\" given twice", label));
      sample.labels.emplace_back(std::move(label), std::move(value));
      reader.skip_blanks();
      if (reader.peek() == ',') {
        reader.expect(',', "expected ','");
        continue;
      }
      if (reader.peek() != '}') reader.fail("expected ',' or '}' after a label");
    }
    reader.expect('}', "expected '}'");
    std::sort(sample.labels.begin(), sample.labels.end());
  }
  reader.skip_blanks();
  const std::string_view value_text = reader.word();
  if (value_text.empty()) reader.fail("missing value");
  const std::optional<double> value = parse_value(value_text);
  if (!value) reader.fail(fmt::format("invalid value \"{}\"", value_text));
  sample.value = *value;
  reader.skip_blanks();
  if (!reader.at_end()) {
    const std::string_view timestamp = reader.word();
    std::int64_t ms = 0;
    const auto [end, ec] =
        std::from_chars(timestamp.data(), timestamp.data() + timestamp.size(), ms);
    if (ec != std::errc{} || end != timestamp.data() + timestamp.size()) {
      reader.fail(fmt::format("invalid timestamp \"{}\"", timestamp));
    }
    reader.skip_blanks();
    if (!reader.at_end()) reader.fail("unexpected text after the timestamp");
  }
  return sample;
}

void append_escaped(std::string& out, std::string_view value) {
  for (const char c : value) {
    if (c == '\\' || c == '"') {
      out += '\\';
      out += c;
    } else if (c == '\n') {
      out += "\\n";
    } else {
      out += c;
    }
  }
}

}  // namespace

PromScrape parse_prometheus_text(std::string_view text) {
  PromScrape out;
  std::size_t number = 0;
  while (!text.empty()) {
    const std::size_t eol = text.find('\n');
    std::string_view line = text.substr(0, eol);
    text = eol == std::string_view::npos ? std::string_view{} : text.substr(eol + 1);
    ++number;
    if (!line.empty() && line.back() == '\r') line.remove_suffix(1);
    while (!line.empty() && is_blank(line.front())) line.remove_prefix(1);
    if (line.empty()) continue;
    LineReader reader(line, number);
    if (line.front() == '#') {
      parse_comment(reader, out);
    } else {
      out.samples.push_back(parse_sample(reader));
    }
  }
  return out;
}

std::string_view label_of(const PromLabels& labels, std::string_view name) noexcept {
  for (const auto& [key, value] : labels) {
    if (key == name) return value;
  }
  return {};
}

std::string series_key(std::string_view name, const PromLabels& labels) {
  std::string key(name);
  if (labels.empty()) return key;
  key += '{';
  bool first = true;
  for (const auto& [label, value] : labels) {
    if (!first) key += ',';
    first = false;
    key += label;
    key += "=\"";
    append_escaped(key, value);
    key += '"';
  }
  key += '}';
  return key;
}

}  // namespace trading_shared::services::tsctl
