#include "common/summary.hpp"

#include <fmt/format.h>

#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace trading_shared::services {

std::string json_quote(std::string_view text) {
  std::string out;
  out.reserve(text.size() + 2);
  out.push_back('"');
  for (const char c : text) {
    switch (c) {
      case '"':
        out += "\\\"";
        break;
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (static_cast<unsigned char>(c) < 0x20) {
          out += fmt::format("\\u{:04x}", static_cast<unsigned>(static_cast<unsigned char>(c)));
        } else {
          out.push_back(c);
        }
    }
  }
  out.push_back('"');
  return out;
}

Summary& Summary::add(std::string key, std::int64_t value) {
  fields_.emplace_back(std::move(key), std::to_string(value));
  return *this;
}
Summary& Summary::add(std::string key, std::uint64_t value) {
  fields_.emplace_back(std::move(key), std::to_string(value));
  return *this;
}
Summary& Summary::add(std::string key, double value) {
  fields_.emplace_back(std::move(key), std::isfinite(value) ? fmt::format("{}", value) : "null");
  return *this;
}
Summary& Summary::add(std::string key, bool value) {
  fields_.emplace_back(std::move(key), value ? "true" : "false");
  return *this;
}
Summary& Summary::add(std::string key, std::string_view value) {
  fields_.emplace_back(std::move(key), json_quote(value));
  return *this;
}
Summary& Summary::add(std::string key, const Summary& object) {
  fields_.emplace_back(std::move(key), object.json());
  return *this;
}

std::string Summary::json() const {
  std::string out = "{";
  bool first = true;
  for (const auto& [key, value] : fields_) {
    if (!first) out += ",";
    first = false;
    out += json_quote(key);
    out += ":";
    out += value;
  }
  out += "}";
  return out;
}

void Summary::write_file(const std::string& path) const {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream file(tmp, std::ios::trunc);
    file << json() << '\n';
    file.flush();
    if (!file) {
      throw std::runtime_error(
          fmt::format("cannot write summary {}: {}", tmp, std::strerror(errno)));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw std::runtime_error(
        fmt::format("cannot rename summary {} to {}: {}", tmp, path, std::strerror(errno)));
  }
}

}  // namespace trading_shared::services
