# SIGIL_SANITIZE: ASan + UBSan for everything in the tree (tests included).
if(SIGIL_SANITIZE)
  add_compile_options(-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
endif()

# SIGIL_FUZZ: coverage instrumentation for libFuzzer; each fuzz target links -fsanitize=fuzzer.
if(SIGIL_FUZZ)
  if(NOT CMAKE_CXX_COMPILER_ID STREQUAL "Clang")
    message(FATAL_ERROR "SIGIL_FUZZ requires clang (configure with CXX=clang++)")
  endif()
  # -fno-sanitize-recover: undefined behaviour stops the fuzzer (a finding), not a printed note.
  add_compile_options(-fsanitize=fuzzer-no-link,address,undefined -fno-omit-frame-pointer -g
                      -fno-sanitize-recover=all)
  add_link_options(-fsanitize=address,undefined)
endif()
