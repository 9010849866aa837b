// ts-report: the HTML report of ts-pipeline outside a run (docs/testing.md, reports).
//   ts-report render REPORT.json OUT.html   draws the page of a JSON report (an old one too)
//   ts-report check PAGE.html [MIN_SECONDS [MIN_FAULTS]]
//                                           exit 0 when the page is well-formed and has its
//                                           charts with at least MIN_SECONDS points per
//                                           series and MIN_FAULTS fault bands; 1 otherwise
// Exit 2 on bad arguments.
#include "e2e_support.hpp"
#include "report_html.hpp"

#include <fmt/format.h>

#include <cstdio>
#include <exception>
#include <fstream>
#include <sstream>
#include <string>
#include <string_view>

namespace {

int usage() {
  std::fputs(
      "usage: ts-report render REPORT.json OUT.html\n"
      "       ts-report check PAGE.html [MIN_SECONDS [MIN_FAULTS]]\n",
      stderr);
  return 2;
}

std::string read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw std::runtime_error("cannot read " + path);
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

}  // namespace

int main(int argc, char** argv) {
  namespace e2e = trading_shared::e2e;
  if (argc < 3) return usage();
  const std::string_view command = argv[1];
  try {
    if (command == "render" && argc == 4) {
      const auto report = e2e::read_json_file(argv[2]);
      if (!report || !report->is_object()) {
        fmt::print(stderr, "ts-report: {} is not a JSON report\n", argv[2]);
        return 1;
      }
      e2e::write_text_file(argv[3], e2e::render_report_html(report->get_object()));
      fmt::print("HTML report written to {}\n", argv[3]);
      return 0;
    }
    if (command == "check" && argc >= 3 && argc <= 5) {
      const std::int64_t min_seconds = argc >= 4 ? std::stoll(argv[3]) : 1;
      const std::int64_t min_faults = argc >= 5 ? std::stoll(argv[4]) : 0;
      const auto problems = e2e::check_report_html(read_file(argv[2]), min_seconds, min_faults);
      if (problems.empty()) {
        fmt::print("{}: well-formed, charts with >= {} points per series and >= {} fault band(s)\n",
                   argv[2], min_seconds, min_faults);
        return 0;
      }
      for (const auto& problem : problems) fmt::print("{}: {}\n", argv[2], problem);
      return 1;
    }
  } catch (const std::exception& e) {
    fmt::print(stderr, "ts-report: {}\n", e.what());
    return 1;
  }
  return usage();
}
