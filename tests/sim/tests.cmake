# Deterministic multi-store simulator (tests/sim/sim.c). CI runs
# WEFT_SIM_CI_SEEDS seeds split into shards that ctest runs in parallel,
# plus a replay check (each seed run twice must trace identically).
add_executable(weft_sim ${CMAKE_CURRENT_LIST_DIR}/sim.c)
target_compile_options(weft_sim PRIVATE ${WEFT_WARNINGS})
target_compile_definitions(weft_sim PRIVATE _POSIX_C_SOURCE=200809L _DEFAULT_SOURCE)
target_include_directories(weft_sim PRIVATE ${PROJECT_SOURCE_DIR})
target_link_libraries(weft_sim PRIVATE weft_static weft_deps)

if(WEFT_SANITIZE)
  set(_sim_default 100)
else()
  set(_sim_default 2000)
endif()
set(WEFT_SIM_CI_SEEDS ${_sim_default} CACHE STRING "Simulator seeds run by ctest")
set(_sim_shards 4)
math(EXPR _sim_last "${_sim_shards} - 1")
foreach(k RANGE ${_sim_last})
  add_test(NAME sim_seeds_${k}
           COMMAND weft_sim --first 1 --count ${WEFT_SIM_CI_SEEDS} --shard ${k}/${_sim_shards})
  set_tests_properties(sim_seeds_${k} PROPERTIES TIMEOUT 900 LABELS sim)
endforeach()
add_test(NAME sim_replay COMMAND weft_sim --first 100001 --count 25 --replay)
set_tests_properties(sim_replay PROPERTIES TIMEOUT 300 LABELS sim)

# Forking devices (a store cloned from a backup writes again): forks are
# kept as evidence everywhere and never make a store look damaged.
if(WEFT_SANITIZE)
  set(_sim_forks 50)
else()
  set(_sim_forks 300)
endif()
add_test(NAME sim_forks COMMAND weft_sim --first 1 --count ${_sim_forks} --forks)
set_tests_properties(sim_forks PROPERTIES TIMEOUT 600 LABELS sim)
