// The one translation unit of ts-feed-sim that compiles Boost.JSON (header-only mode).
#include <boost/json/src.hpp>
