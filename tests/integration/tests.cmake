# Integration tests: real `weft` processes syncing over TLS on 127.0.0.1
# (tests/integration/test_sync.py, Python 3 standard library only). One
# ctest per test class so they run in parallel; every server listens on
# port 0, so parallel runs never collide.
add_executable(weft_test_gen ${CMAKE_CURRENT_LIST_DIR}/gen_events.c)
target_compile_options(weft_test_gen PRIVATE ${WEFT_WARNINGS})
target_link_libraries(weft_test_gen PRIVATE weft_static)

find_program(WEFT_PYTHON3 NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT WEFT_PYTHON3)
  find_program(WEFT_PYTHON3 NAMES python3)
endif()
if(WEFT_PYTHON3)
  foreach(group Converge Refusals Tamper Kill Ports Cli Serve)
    string(TOLOWER ${group} _lower)
    add_test(NAME integration_${_lower}
             COMMAND ${WEFT_PYTHON3} ${CMAKE_CURRENT_LIST_DIR}/test_sync.py -v ${group})
    set_tests_properties(integration_${_lower} PROPERTIES
      ENVIRONMENT "WEFT_BIN=$<TARGET_FILE:weft_cli>;WEFT_GEN_BIN=$<TARGET_FILE:weft_test_gen>"
      TIMEOUT 300 LABELS integration)
  endforeach()
else()
  message(WARNING "python3 not found: the integration tests are not registered")
endif()
