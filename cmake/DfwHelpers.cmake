# One helper per kind of target, so that each component's CMakeLists.txt only
# declares what it is made of (in the manner of Abseil's AbseilHelpers.cmake).
#
#   dfw_library(NAME <name> SRCS ... [HDRS ...] [DEPS ...] [PUBLIC_INCLUDE <dir>])
#       -> static library dfw_<name>, alias dfw::<name>. Public headers live in
#          <component>/include/dfw/<component>/ and are included as
#          <dfw/<component>/x.h>.
#   dfw_executable(NAME <name> SRCS ... [DEPS ...])
#   dfw_test(NAME <name> SRCS ... [DEPS ...] [LABELS ...] [TIMEOUT s])
#       -> GoogleTest binary registered with ctest (one ctest entry per TEST).
#   dfw_benchmark(NAME <name> SRCS ... [DEPS ...])
#
# Project code builds with -Wall -Wextra; with -DDFW_WERROR=ON (CI: .ci/run)
# warnings are errors. A user's build stays a warning on a compiler version
# that warns where ours does not. Third-party headers come in as system
# includes so their warnings are not ours.
#
# Sanitizers: -DDFW_SANITIZE=address (ASan + UBSan) or =thread (TSan); empty
# (the default) builds without. The flags (-fsanitize=...,
# -fno-omit-frame-pointer) go to every target the project defines (libraries,
# generated protobuf code, C shims, executables, tests, benchmarks) and to
# their link; third-party code (Debian's DPDK, gRPC, libopenvswitch built by
# cmake/OpenvSwitch.cmake) stays uninstrumented. scripts/sanitize.sh builds
# and runs the tests that way (build-asan/, build-tsan/).

option(DFW_WERROR "Treat the project's compiler warnings as errors (CI turns it on)" OFF)
set(DFW_WARNINGS -Wall -Wextra -Wno-missing-field-initializers)
if(DFW_WERROR)
  list(APPEND DFW_WARNINGS -Werror)
  # GCC 12 at -O3 (Release) reports -Wrestrict on `"literal" + std::string`
  # inside libstdc++'s own inlined code (GCC PR 105651, a false positive):
  # shown, not fatal.
  if(CMAKE_CXX_COMPILER_ID STREQUAL "GNU")
    list(APPEND DFW_WARNINGS -Wno-error=restrict)
  endif()
endif()

set(DFW_SANITIZE "" CACHE STRING "Sanitizer for project code: empty, address (ASan+UBSan) or thread (TSan)")
set_property(CACHE DFW_SANITIZE PROPERTY STRINGS "" address thread)
if(DFW_SANITIZE STREQUAL "address")
  set(DFW_SANITIZE_FLAGS -fsanitize=address,undefined -fno-omit-frame-pointer)
elseif(DFW_SANITIZE STREQUAL "thread")
  set(DFW_SANITIZE_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
elseif(DFW_SANITIZE STREQUAL "")
  set(DFW_SANITIZE_FLAGS "")
else()
  message(FATAL_ERROR "DFW_SANITIZE=${DFW_SANITIZE}: expected empty, address or thread")
endif()
if(DFW_SANITIZE_FLAGS)
  # Directory-wide from the top-level CMakeLists.txt (which includes this file
  # before any add_subdirectory), so targets declared without these helpers
  # (proto's generated library, the OVS C shims) are instrumented too.
  add_compile_options(${DFW_SANITIZE_FLAGS})
  add_link_options(${DFW_SANITIZE_FLAGS})
endif()

function(dfw_library)
  cmake_parse_arguments(L "" "NAME;PUBLIC_INCLUDE" "SRCS;HDRS;DEPS;PRIVATE_DEPS" ${ARGN})
  set(target dfw_${L_NAME})
  add_library(${target} STATIC ${L_SRCS} ${L_HDRS})
  add_library(dfw::${L_NAME} ALIAS ${target})
  if(NOT L_PUBLIC_INCLUDE)
    set(L_PUBLIC_INCLUDE ${CMAKE_CURRENT_SOURCE_DIR}/include)
  endif()
  target_include_directories(${target} PUBLIC ${L_PUBLIC_INCLUDE}
                                       PRIVATE ${CMAKE_CURRENT_SOURCE_DIR}/src)
  target_link_libraries(${target} PUBLIC ${L_DEPS} PRIVATE ${L_PRIVATE_DEPS})
  target_compile_options(${target} PRIVATE ${DFW_WARNINGS})
  set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE ON)
endfunction()

function(dfw_executable)
  cmake_parse_arguments(E "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(${E_NAME} ${E_SRCS})
  target_link_libraries(${E_NAME} PRIVATE ${E_DEPS})
  target_compile_options(${E_NAME} PRIVATE ${DFW_WARNINGS})
endfunction()

function(dfw_test)
  cmake_parse_arguments(T "" "NAME;TIMEOUT" "SRCS;DEPS;LABELS" ${ARGN})
  set(target test_${T_NAME})
  add_executable(${target} ${T_SRCS})
  target_link_libraries(${target} PRIVATE ${T_DEPS} GTest::gtest GTest::gmock GTest::gtest_main)
  target_compile_options(${target} PRIVATE ${DFW_WARNINGS})
  if(NOT T_TIMEOUT)
    set(T_TIMEOUT 300)
  endif()
  # PROPERTIES takes one value per property: pass a list of labels as one.
  string(REPLACE ";" "\\;" T_LABELS_JOINED "${T_LABELS}")
  gtest_discover_tests(${target}
    TEST_PREFIX "${T_NAME}."
    DISCOVERY_TIMEOUT 60
    PROPERTIES TIMEOUT ${T_TIMEOUT} LABELS "${T_LABELS_JOINED}")
endfunction()

function(dfw_benchmark)
  cmake_parse_arguments(B "" "NAME" "SRCS;DEPS" ${ARGN})
  add_executable(bench_${B_NAME} ${B_SRCS})
  target_link_libraries(bench_${B_NAME} PRIVATE ${B_DEPS})
  target_compile_options(bench_${B_NAME} PRIVATE ${DFW_WARNINGS})
endfunction()
