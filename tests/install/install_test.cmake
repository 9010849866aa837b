# install.package (tests/install/CMakeLists.txt): run with cmake -P. Fails (FATAL_ERROR) with
# the step and its output.
cmake_minimum_required(VERSION 3.25)

function(run step)
  execute_process(COMMAND ${ARGN} RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err
                  TIMEOUT 300)
  if(NOT code EQUAL 0)
    message(FATAL_ERROR "${step} failed (${code}):\n${ARGN}\n${out}\n${err}")
  endif()
  set(last_output "${out}${err}" PARENT_SCOPE)
  message(STATUS "${step}: ok")
endfunction()

# A clean prefix each time: nothing but what `cmake --install` puts there.
set(prefix ${WORK_DIR}/prefix)
file(REMOVE_RECURSE ${WORK_DIR})
file(MAKE_DIRECTORY ${WORK_DIR})
run("cmake --install" ${CMAKE_COMMAND} --install ${BUILD_DIR} --prefix ${prefix})

foreach(file IN ITEMS include/trading_shared/version.hpp include/trading_shared/core/build_config.hpp
                      include/trading_shared/pg/postgres_client.hpp lib/pkgconfig/trading_shared.pc
                      lib/cmake/trading_shared/trading_sharedConfig.cmake
                      lib/cmake/trading_shared/trading_sharedConfigVersion.cmake
                      lib/cmake/trading_shared/trading_sharedTargets.cmake)
  if(NOT EXISTS ${prefix}/${file})
    message(FATAL_ERROR "not installed: ${file}")
  endif()
endforeach()
file(READ ${prefix}/include/trading_shared/version.hpp version_header)
if(NOT version_header MATCHES "TRADING_SHARED_VERSION \"${VERSION}\"")
  message(FATAL_ERROR "the installed version.hpp does not say ${VERSION}")
endif()

# A sanitizer build's libraries need the sanitizer runtime in the examples too.
set(extra_flags -O0)
if(SANITIZE)
  list(APPEND extra_flags -fsanitize=address,undefined -fno-omit-frame-pointer)
endif()
list(JOIN extra_flags " " extra_flags_string)

# 1. find_package: the examples as a project of their own, from the prefix alone (no package
#    registry, no system-wide trading_shared).
set(launcher_arg)
if(LAUNCHER)
  set(launcher_arg -DCMAKE_CXX_COMPILER_LAUNCHER=${LAUNCHER})
endif()
run("configure examples (find_package)" ${CMAKE_COMMAND} -S ${SOURCE_DIR}/examples
    -B ${WORK_DIR}/examples -G ${GENERATOR} -DCMAKE_CXX_COMPILER=${CXX} ${launcher_arg}
    -DCMAKE_PREFIX_PATH=${prefix} -DCMAKE_FIND_USE_PACKAGE_REGISTRY=OFF
    -DCMAKE_FIND_USE_SYSTEM_PACKAGE_REGISTRY=OFF -DCMAKE_BUILD_TYPE=None
    "-DCMAKE_CXX_FLAGS=${extra_flags_string}" "-DCMAKE_EXE_LINKER_FLAGS=${extra_flags_string}")
if(NOT last_output MATCHES "trading_shared ${VERSION} from ${prefix}/lib/cmake/trading_shared")
  message(FATAL_ERROR "find_package did not take the installed package:\n${last_output}")
endif()
run("build examples (find_package)" ${CMAKE_COMMAND} --build ${WORK_DIR}/examples -j 1)
run("run lifecycle_after --help (find_package)" ${WORK_DIR}/examples/lifecycle_after --help)

# An incompatible version is refused by the version file.
file(MAKE_DIRECTORY ${WORK_DIR}/wrong-version)
file(WRITE ${WORK_DIR}/wrong-version/CMakeLists.txt
     "cmake_minimum_required(VERSION 3.25)\nproject(v LANGUAGES CXX)\nfind_package(trading_shared 99.0 REQUIRED)\n")
execute_process(COMMAND ${CMAKE_COMMAND} -S ${WORK_DIR}/wrong-version -B ${WORK_DIR}/wrong-version/b
                -DCMAKE_PREFIX_PATH=${prefix} RESULT_VARIABLE code OUTPUT_QUIET ERROR_VARIABLE err)
if(code EQUAL 0 OR NOT err MATCHES "trading_shared")
  message(FATAL_ERROR "find_package(trading_shared 99.0) was not refused:\n${err}")
endif()
message(STATUS "find_package(trading_shared 99.0) refused: ok")

# 2. pkg-config: one example (it uses core, config, lifecycle, pg and redis) compiled and
#    linked with the flags `pkg-config --cflags --libs trading_shared` gives.
set(ENV{PKG_CONFIG_PATH} ${prefix}/lib/pkgconfig)
run("pkg-config --cflags --libs trading_shared" pkg-config --cflags --libs trading_shared)
string(STRIP "${last_output}" pc_flags)
separate_arguments(pc_flags UNIX_COMMAND "${pc_flags}")
message(STATUS "pkg-config: ${pc_flags}")
run("pkg-config --modversion" pkg-config --modversion trading_shared)
if(NOT last_output MATCHES "^${VERSION}")
  message(FATAL_ERROR "pkg-config --modversion trading_shared: ${last_output}")
endif()
set(rpath)
if(SHARED)
  set(rpath -Wl,-rpath,${prefix}/lib)  # shared libraries outside the loader's default paths
endif()
run("build lifecycle_after (pkg-config)" ${LAUNCHER} ${CXX} ${extra_flags} -Wall -Wextra -Werror
    ${SOURCE_DIR}/examples/lifecycle_after.cpp ${pc_flags} ${rpath} -o ${WORK_DIR}/lifecycle_after_pc)
run("run lifecycle_after --help (pkg-config)" ${WORK_DIR}/lifecycle_after_pc --help)

# 3. The ODR guard: the installed headers without the definitions do not compile, and say why.
file(WRITE ${WORK_DIR}/odr.cpp "#include <trading_shared/core/error.hpp>\nint main() { return 0; }\n")
execute_process(COMMAND ${CXX} -std=c++20 -fsyntax-only -I${prefix}/include ${WORK_DIR}/odr.cpp
                RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(code EQUAL 0 OR NOT err MATCHES "BOOST_ASIO_SEPARATE_COMPILATION is not defined")
  message(FATAL_ERROR "a build without the Asio definitions was not refused clearly:\n${err}")
endif()
message(STATUS "ODR guard (Asio definitions missing): ok")
execute_process(COMMAND ${CXX} -std=c++20 -fsyntax-only -I${prefix}/include
                -DBOOST_ASIO_SEPARATE_COMPILATION -DBOOST_ASIO_NO_DEPRECATED
                -DBOOST_ASIO_RECYCLING_ALLOCATOR_CACHE_SIZE=8 ${WORK_DIR}/odr.cpp
                RESULT_VARIABLE code OUTPUT_VARIABLE out ERROR_VARIABLE err)
if(code EQUAL 0 OR NOT err MATCHES "SPDLOG_COMPILED_LIB and SPDLOG_FMT_EXTERNAL are not defined")
  message(FATAL_ERROR "a build without the spdlog definitions was not refused clearly:\n${err}")
endif()
message(STATUS "ODR guard (spdlog definitions missing): ok")
file(REMOVE_RECURSE ${WORK_DIR})
