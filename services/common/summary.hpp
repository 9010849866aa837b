#pragma once
/// @file
/// The JSON summary a service writes on exit (`--summary-file`): flat counters and nested
/// objects, in insertion order. Written to `<path>.tmp` and renamed, so that a reader never
/// sees half a file.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace trading_shared::services {

class Summary {
 public:
  Summary& add(std::string key, std::int64_t value);
  Summary& add(std::string key, std::uint64_t value);
  Summary& add(std::string key, int value) { return add(std::move(key), std::int64_t{value}); }
  Summary& add(std::string key, double value);
  Summary& add(std::string key, bool value);
  Summary& add(std::string key, std::string_view value);
  Summary& add(std::string key, const char* value) {
    return add(std::move(key), std::string_view(value));
  }
  Summary& add(std::string key, const Summary& object);

  std::string json() const;
  /// Writes `json()` and a newline; throws std::runtime_error (with errno text) on failure.
  void write_file(const std::string& path) const;

 private:
  std::vector<std::pair<std::string, std::string>> fields_;  // key, rendered JSON value
};

/// `text` as a JSON string literal, quotes included.
std::string json_quote(std::string_view text);

}  // namespace trading_shared::services
