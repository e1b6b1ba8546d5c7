# Conformance harness tests for sync/negentropy.c: two harness processes
# (client and server) reconcile random sets through the NEGENTROPY.md line
# protocol, and the known vectors go through the harness byte for byte.
if(TARGET weft-negentropy-harness)
  set(_neg_drive /usr/bin/python3 ${PROJECT_SOURCE_DIR}/tests/negentropy/drive.py
      $<TARGET_FILE:weft-negentropy-harness>)
  add_test(NAME negentropy_harness_vectors COMMAND ${_neg_drive} vectors)
  add_test(NAME negentropy_harness_random COMMAND ${_neg_drive} random --runs 24 --seed 1)
  add_test(NAME negentropy_harness_framesizelimit
           COMMAND ${_neg_drive} random --runs 16 --seed 2 --limit 4096 --items 6000)
  add_test(NAME negentropy_harness_file
           COMMAND ${_neg_drive} file ${PROJECT_SOURCE_DIR}/tests/negentropy/client.txt
                   ${PROJECT_SOURCE_DIR}/tests/negentropy/server.txt)
  # Sessions recorded with the reference C++ implementation: every message
  # must match byte for byte.
  add_test(NAME negentropy_harness_transcripts
           COMMAND ${_neg_drive} transcript
                   ${PROJECT_SOURCE_DIR}/tests/negentropy/transcript-40.txt
                   ${PROJECT_SOURCE_DIR}/tests/negentropy/transcript-1200.txt)
  set_tests_properties(negentropy_harness_vectors negentropy_harness_random
    negentropy_harness_framesizelimit negentropy_harness_file
    negentropy_harness_transcripts
    PROPERTIES TIMEOUT 300 LABELS negentropy)
endif()
