# Warnings for our own targets only; third-party headers come in as SYSTEM includes.
# -Wnull-dereference is left out: GCC 12 reports it from inside Asio's inlined code.
# -Wno-mismatched-new-delete: GCC 12 false positive on Asio's coroutine frame operator delete.
function(ts_set_warnings target)
  target_compile_options(${target} PRIVATE -Wall -Wextra -Wpedantic -Wshadow -Wnon-virtual-dtor
    -Wold-style-cast -Wcast-align -Woverloaded-virtual -Wimplicit-fallthrough
    -Wno-mismatched-new-delete)
  if(TS_WERROR)
    target_compile_options(${target} PRIVATE -Werror)
  endif()
endfunction()
