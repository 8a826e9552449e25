# sigil_prefer_static_grpc(): points the imported gRPC, protobuf and Abseil targets at Debian's
# static archives (lib*.a, shipped in the same -dev packages) instead of the shared objects.
#
# Why: the node agent is a long-running daemon on every host, and ~80 shared objects (gRPC
# pulls in 60+ libabsl_*.so) cost resident memory that has nothing to do with its work:
# relocated data, GOT/PLT pages, dynamic symbol tables touched by symbol lookup, and
# fault-around pages of many separate text mappings. Linking these statically is measured in
# docs/benchmarks.md ("node agent memory"). OpenSSL, libc and libstdc++ stay shared (one
# OpenSSL for every library in the process; security updates apply without a rebuild).
#
# Must be called in the top-level directory after find_package(gRPC CONFIG) so the imported
# targets it edits are the ones every subdirectory sees.
function(sigil_prefer_static_grpc)
  get_directory_property(imported IMPORTED_TARGETS)
  set(changed 0)
  foreach(t IN LISTS imported)
    if(NOT t MATCHES "^(gRPC|absl|protobuf|re2|c-ares)::")
      continue()
    endif()
    get_target_property(type ${t} TYPE)
    if(NOT type MATCHES "SHARED_LIBRARY|UNKNOWN_LIBRARY")
      continue()
    endif()
    foreach(prop IMPORTED_LOCATION IMPORTED_LOCATION_NONE IMPORTED_LOCATION_RELEASE
                 IMPORTED_LOCATION_RELWITHDEBINFO IMPORTED_LOCATION_DEBUG)
      get_target_property(loc ${t} ${prop})
      if(loc AND loc MATCHES "\\.so(\\.[0-9.]+)?$")
        string(REGEX REPLACE "\\.so(\\.[0-9.]+)?$" ".a" archive "${loc}")
        if(EXISTS "${archive}")
          set_target_properties(${t} PROPERTIES ${prop} "${archive}")
          math(EXPR changed "${changed} + 1")
        endif()
      endif()
    endforeach()
  endforeach()
  message(STATUS "sigil: linking gRPC/protobuf/Abseil statically (${changed} imported locations)")
endfunction()
