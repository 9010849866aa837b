# Install rules: headers (with the generated version header), the libraries, the CMake package
# (trading_sharedConfig.cmake, its version file and the exported targets trading_shared::core,
# ::pg, ::redis, ::ws, ::http, ::lifecycle, ::asio and the umbrella trading_shared::trading_shared)
# and trading_shared.pc for pkg-config. docs/operations.md ("Installing the library").
include(CMakePackageConfigHelpers)

set(ts_install_targets ts_asio ts_core ts_pg ts_redis ts_lifecycle ts_ws ts_http)
set(ts_existing_targets)
foreach(target IN LISTS ts_install_targets)
  if(TARGET ${target})
    list(APPEND ts_existing_targets ${target})
  endif()
endforeach()

# Shared libraries find each other (libts_core.so needs libts_asio.so) in their own directory,
# wherever the prefix is.
# A shared library carries the version in its file name and its SONAME (MAJOR.MINOR: a minor
# release may change the ABI while the major version is 0), so two installs can coexist.
if(BUILD_SHARED_LIBS)
  set_target_properties(${ts_existing_targets} PROPERTIES INSTALL_RPATH "$ORIGIN"
    VERSION ${PROJECT_VERSION} SOVERSION ${PROJECT_VERSION_MAJOR}.${PROJECT_VERSION_MINOR})
endif()

# The umbrella: every library of the package.
add_library(ts_all INTERFACE)
add_library(trading_shared::trading_shared ALIAS ts_all)
set_target_properties(ts_all PROPERTIES EXPORT_NAME trading_shared)
target_link_libraries(ts_all INTERFACE ${ts_existing_targets})

set(ts_cmake_dir ${CMAKE_INSTALL_LIBDIR}/cmake/trading_shared)

install(TARGETS ${ts_existing_targets} ts_all EXPORT trading_sharedTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT development
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR} COMPONENT runtime
  RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR} COMPONENT runtime
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${PROJECT_SOURCE_DIR}/include/trading_shared ${PROJECT_BINARY_DIR}/generated/include/trading_shared
  DESTINATION ${CMAKE_INSTALL_INCLUDEDIR} COMPONENT development FILES_MATCHING PATTERN "*.hpp")
install(EXPORT trading_sharedTargets NAMESPACE trading_shared:: DESTINATION ${ts_cmake_dir}
  COMPONENT development)

# A static library's private dependencies (tomlplusplus, hiredis) are the consumer's link
# inputs too: the package config finds them only then.
if(BUILD_SHARED_LIBS)
  set(TS_PACKAGE_STATIC OFF)
else()
  set(TS_PACKAGE_STATIC ON)
endif()
configure_package_config_file(${PROJECT_SOURCE_DIR}/cmake/trading_sharedConfig.cmake.in
  ${PROJECT_BINARY_DIR}/package/trading_sharedConfig.cmake INSTALL_DESTINATION ${ts_cmake_dir})
# Before 1.0.0 a minor version may break the API: SameMinorVersion; from 1.0.0 on, SameMajorVersion.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/package/trading_sharedConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/package/trading_sharedConfig.cmake
              ${PROJECT_BINARY_DIR}/package/trading_sharedConfigVersion.cmake
  DESTINATION ${ts_cmake_dir} COMPONENT development)

# pkg-config: the same compile definitions as the exported targets (the ODR guard of
# <trading_shared/core/build_config.hpp> refuses a build without them), libraries in link order.
set(ts_pc_libs)
foreach(target IN ITEMS ts_http ts_ws ts_lifecycle ts_redis ts_pg ts_core ts_asio)
  if(TARGET ${target})
    string(APPEND ts_pc_libs " -l${target}")
  endif()
endforeach()
get_target_property(ts_asio_definitions ts_asio INTERFACE_COMPILE_DEFINITIONS)
set(ts_pc_cflags)
foreach(definition IN LISTS ts_asio_definitions)
  string(APPEND ts_pc_cflags " -D${definition}")
endforeach()
# spdlog's own definitions (SPDLOG_COMPILED_LIB, SPDLOG_FMT_EXTERNAL, ...) come with spdlog.pc.
set(ts_pc_requires "spdlog fmt libpq openssl")
if(TS_PACKAGE_STATIC)
  string(APPEND ts_pc_requires " hiredis tomlplusplus")
  set(ts_pc_requires_private "")
else()
  set(ts_pc_requires_private "hiredis tomlplusplus")
endif()
# Relocatable: the prefix is found from the .pc file's own place (pkg-config's ${pcfiledir}),
# so `cmake --install --prefix <anywhere>` gives a working module.
if(IS_ABSOLUTE "${CMAKE_INSTALL_LIBDIR}")
  set(ts_pc_prefix "${CMAKE_INSTALL_PREFIX}")
else()
  string(REGEX REPLACE "[^/]+" ".." ts_pc_up "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
  set(ts_pc_prefix "\${pcfiledir}/${ts_pc_up}")
endif()
configure_file(${PROJECT_SOURCE_DIR}/cmake/trading_shared.pc.in
  ${PROJECT_BINARY_DIR}/package/trading_shared.pc @ONLY)
install(FILES ${PROJECT_BINARY_DIR}/package/trading_shared.pc
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig COMPONENT development)
