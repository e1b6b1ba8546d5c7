# Bindings run against the shared library; under sanitizers the runtime
# would have to be preloaded into the interpreter, so not there.
find_program(WEFT_SYSTEM_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(WEFT_SYSTEM_PYTHON AND NOT WEFT_SANITIZE)
  add_test(NAME bindings_python
    COMMAND ${CMAKE_COMMAND} -E env WEFT_LIB=$<TARGET_FILE:weft>
      ${WEFT_SYSTEM_PYTHON} ${PROJECT_SOURCE_DIR}/bindings/python/test_weft.py -v)
  set_tests_properties(bindings_python PROPERTIES TIMEOUT 120)
endif()
