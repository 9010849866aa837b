#pragma once
/// @file
/// ts-pipeline's HTML report (docs/testing.md, reports): one self-contained page (inline SVG
/// charts and CSS, a small inline script for the hover read-out, no network) drawn from the JSON
/// report: the verdict, the run's figures, trades sent and persisted per second, tick-to-row
/// latency percentiles per second (log scale), the lag of the progress samples, every fault
/// marked as a band on each chart and listed, the failures and the services' exits. The JSON
/// report itself is embedded (`<script type="application/json" id="report-data">`).
///
/// The page is well-formed XML as well as HTML (XHTML syntax), so that check_report_html can
/// parse it strictly.

#include <boost/json/object.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace trading_shared::e2e {

/// The page for a report as ts-pipeline writes it (report_json with its "series").
std::string render_report_html(const boost::json::object& report);

/// What is wrong with a page that render_report_html wrote (empty: nothing): not well-formed,
/// a chart missing or with fewer than `min_seconds` points, fewer than `min_faults` fault
/// bands, the embedded report missing or without `min_seconds` seconds of series.
std::vector<std::string> check_report_html(const std::string& page, std::int64_t min_seconds,
                                           std::int64_t min_faults);

/// Writes `text` to `path` via a temporary file and a rename; throws on failure.
void write_text_file(const std::string& path, const std::string& text);

}  // namespace trading_shared::e2e
