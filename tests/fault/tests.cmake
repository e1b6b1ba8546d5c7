# Fault injection (docs/SECURITY.md): storage faults through a failing
# SQLite VFS, power loss, allocation failure, hostile peers, kill -9 of
# real processes, and network faults between network namespaces.
set(_fault_dir ${CMAKE_CURRENT_SOURCE_DIR}/fault)
add_library(weft_faultutil STATIC ${_fault_dir}/faultutil.c ${_fault_dir}/faultvfs.c)
target_compile_options(weft_faultutil PRIVATE ${WEFT_WARNINGS})
target_compile_definitions(weft_faultutil PUBLIC _POSIX_C_SOURCE=200809L _DEFAULT_SOURCE)
target_include_directories(weft_faultutil PUBLIC ${PROJECT_SOURCE_DIR} ${_fault_dir})
target_link_libraries(weft_faultutil PUBLIC weft_static weft_deps PkgConfig::CMOCKA)

file(GLOB _fault_tests CONFIGURE_DEPENDS ${_fault_dir}/test_*.c)
foreach(src ${_fault_tests})
  get_filename_component(name ${src} NAME_WE)
  add_executable(fault_${name} ${src})
  target_compile_options(fault_${name} PRIVATE ${WEFT_WARNINGS} -Wno-missing-prototypes)
  target_link_libraries(fault_${name} PRIVATE weft_faultutil)
  add_test(NAME fault_${name} COMMAND fault_${name})
  # A small ASan quarantine so that RSS measurements mean something.
  set_tests_properties(fault_${name} PROPERTIES TIMEOUT 900 LABELS fault
    ENVIRONMENT "CMOCKA_MESSAGE_OUTPUT=stdout;ASAN_OPTIONS=detect_leaks=1:abort_on_error=1:quarantine_size_mb=16")
endforeach()

# kill -9 of writing and syncing `weft` processes (Python 3 stdlib).
add_test(NAME fault_kill9
  COMMAND /usr/bin/python3 ${_fault_dir}/kill9.py --weft $<TARGET_FILE:weft_cli> --kills 200)
set_tests_properties(fault_kill9 PROPERTIES TIMEOUT 900 LABELS "fault;no_asan")

# Three devices in network namespaces with impaired links; skips (77) when
# namespaces are not available.
add_test(NAME fault_netns
  COMMAND /usr/bin/python3 ${_fault_dir}/netns.py --weft $<TARGET_FILE:weft_cli>)
set_tests_properties(fault_netns PROPERTIES TIMEOUT 900 LABELS "fault;no_asan" SKIP_RETURN_CODE 77)
