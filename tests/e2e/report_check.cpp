// check_report_html and write_text_file (report_html.hpp): the strict reading of the HTML
// report that ts-report check (and through it ctest) applies.
#include <boost/json.hpp>
#include <boost/property_tree/ptree.hpp>
#include <boost/property_tree/xml_parser.hpp>

#include "report_html.hpp"

#include <fmt/format.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <stdexcept>

namespace trading_shared::e2e {

namespace pt = boost::property_tree;

namespace {

struct Element {
  std::string name;
  std::map<std::string, std::string> attributes;
  const pt::ptree* node = nullptr;
};

/// Every element of the tree, depth first.
void collect(const std::string& name, const pt::ptree& node, std::vector<Element>& out) {
  Element element{name, {}, &node};
  if (const auto attributes = node.get_child_optional("<xmlattr>")) {
    for (const auto& [key, value] : *attributes) element.attributes[key] = value.data();
  }
  out.push_back(std::move(element));
  for (const auto& [child_name, child] : node) {
    if (child_name == "<xmlattr>" || child_name == "<xmlcomment>") continue;
    collect(child_name, child, out);
  }
}

std::string attribute(const Element& e, const std::string& key) {
  const auto it = e.attributes.find(key);
  return it == e.attributes.end() ? std::string() : it->second;
}

}  // namespace

std::vector<std::string> check_report_html(const std::string& page, std::int64_t min_seconds,
                                           std::int64_t min_faults) {
  std::vector<std::string> problems;
  pt::ptree tree;
  try {
    std::istringstream in(page);
    pt::read_xml(in, tree);
  } catch (const pt::xml_parser_error& e) {
    problems.push_back(fmt::format("not well-formed: {}", e.what()));
    return problems;
  }
  std::vector<Element> elements;
  for (const auto& [name, child] : tree) collect(name, child, elements);
  if (elements.empty() || elements.front().name != "html") {
    problems.push_back("the root element is not <html>");
    return problems;
  }
  const auto by_id = [&](const std::string& id) -> const Element* {
    for (const auto& e : elements) {
      if (attribute(e, "id") == id) return &e;
    }
    return nullptr;
  };
  for (const std::string id : {"chart-throughput", "chart-latency", "chart-lag"}) {
    const Element* svg = by_id(id);
    if (svg == nullptr || svg->name != "svg") {
      problems.push_back(fmt::format("no <svg id=\"{}\">", id));
      continue;
    }
    std::vector<Element> inside;
    for (const auto& [name, child] : *svg->node) collect(name, child, inside);
    std::int64_t paths = 0;
    std::int64_t most_points = 0;
    std::int64_t bands = 0;
    for (const auto& e : inside) {
      if (e.name == "path" && attribute(e, "class") == "series") {
        ++paths;
        most_points =
            std::max<std::int64_t>(most_points, std::atoll(attribute(e, "data-points").c_str()));
      }
      if (e.name == "rect" && attribute(e, "class") == "fault") ++bands;
    }
    if (paths == 0) problems.push_back(fmt::format("{}: no series drawn", id));
    // The lag chart has a point per progress sample, not per second.
    if (id != "chart-lag" && most_points < min_seconds) {
      problems.push_back(fmt::format("{}: at most {} points in a series, {} expected", id,
                                     most_points, min_seconds));
    }
    if (bands < min_faults) {
      problems.push_back(
          fmt::format("{}: {} fault band(s), at least {} expected", id, bands, min_faults));
    }
  }
  const Element* data = by_id("report-data");
  if (data == nullptr) {
    problems.push_back("no embedded report (<script id=\"report-data\">)");
    return problems;
  }
  try {
    const auto report = boost::json::parse(data->node->data());
    const auto* series = report.as_object().if_contains("series");
    const auto* seconds = series != nullptr ? series->as_object().if_contains("seconds") : nullptr;
    const auto count =
        seconds != nullptr ? static_cast<std::int64_t>(seconds->as_array().size()) : 0;
    if (count < min_seconds) {
      problems.push_back(fmt::format("the embedded report has {} seconds of series, {} expected",
                                     count, min_seconds));
    }
  } catch (const std::exception& e) {
    problems.push_back(fmt::format("the embedded report is not valid JSON: {}", e.what()));
  }
  return problems;
}

void write_text_file(const std::string& path, const std::string& text) {
  const std::string tmp = path + ".tmp";
  {
    std::ofstream out(tmp, std::ios::trunc | std::ios::binary);
    out << text;
    out.flush();
    if (!out) {
      throw std::runtime_error(fmt::format("cannot write {}: {}", tmp, std::strerror(errno)));
    }
  }
  if (std::rename(tmp.c_str(), path.c_str()) != 0) {
    throw std::runtime_error(
        fmt::format("cannot rename {} to {}: {}", tmp, path, std::strerror(errno)));
  }
}

}  // namespace trading_shared::e2e
