#pragma once
/// @file
/// The compile definitions every translation unit that includes the library's headers must
/// share with the library itself. Asio is compiled once, in the library
/// (BOOST_ASIO_SEPARATE_COMPILATION), with a larger per-thread recycling cache; spdlog is the
/// compiled library on the system's fmt. A program built without them would still link and run,
/// with two incompatible definitions of the same Asio and spdlog entities (an ODR violation:
/// undefined behaviour). So a build without them is refused here.
///
/// They come with the exported CMake targets (find_package(trading_shared), link
/// trading_shared::trading_shared or a part) and with `pkg-config --cflags trading_shared`;
/// only a hand-written compile line can miss them (docs/operations.md, "Installing the library").

#if !defined(BOOST_ASIO_SEPARATE_COMPILATION)
#error \
    "trading_shared: BOOST_ASIO_SEPARATE_COMPILATION is not defined. Build with the flags of the CMake target trading_shared::trading_shared or of `pkg-config --cflags trading_shared` (they define BOOST_ASIO_SEPARATE_COMPILATION BOOST_ASIO_NO_DEPRECATED BOOST_ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE=8); mixing header-only and separately compiled Asio is an ODR violation."
#endif
#if !defined(BOOST_ASIO_NO_DEPRECATED)
#error \
    "trading_shared: BOOST_ASIO_NO_DEPRECATED is not defined. Build with the flags of the CMake target trading_shared::trading_shared or of `pkg-config --cflags trading_shared`."
#endif
#if !defined(BOOST_ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE) || \
    BOOST_ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE != 8
#error \
    "trading_shared: BOOST_ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE must be 8, as in the library. Build with the flags of the CMake target trading_shared::trading_shared or of `pkg-config --cflags trading_shared`."
#endif
#if !defined(SPDLOG_COMPILED_LIB) || !defined(SPDLOG_FMT_EXTERNAL)
#error \
    "trading_shared: SPDLOG_COMPILED_LIB and SPDLOG_FMT_EXTERNAL are not defined (spdlog's header-only mode or its bundled fmt). Build with the flags of the CMake target trading_shared::trading_shared (it links spdlog::spdlog) or of `pkg-config --cflags trading_shared`."
#endif
