add_test(NAME cli_basics COMMAND bash ${PROJECT_SOURCE_DIR}/tests/cli/test_cli.sh $<TARGET_FILE:weft_cli>)
set_tests_properties(cli_basics PROPERTIES TIMEOUT 120)
