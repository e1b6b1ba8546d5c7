add_test(NAME install_consumer
  COMMAND bash ${PROJECT_SOURCE_DIR}/tests/install/check_install.sh ${PROJECT_BINARY_DIR} ${PROJECT_SOURCE_DIR})
set_tests_properties(install_consumer PROPERTIES TIMEOUT 300)
set_tests_properties(install_consumer PROPERTIES LABELS no_asan)
