# Finds weft's dependencies and says which Debian package to install when one
# is missing. Produces the interface target `weft_deps` and WEFT_DEPS_LINK
# (plain link flags for the installed static library).
find_package(PkgConfig QUIET)

function(weft_require_pkg var pcname debpkg)
  if(PKG_CONFIG_FOUND)
    pkg_check_modules(${var} QUIET IMPORTED_TARGET ${pcname})
  endif()
  if(NOT ${var}_FOUND)
    message(FATAL_ERROR "weft needs ${pcname} and did not find it. "
      "On Debian/Ubuntu: apt-get install ${debpkg} pkg-config")
  endif()
endfunction()

weft_require_pkg(SQLITE3 sqlite3 libsqlite3-dev)
weft_require_pkg(SODIUM libsodium libsodium-dev)

# Debian's mbedTLS 2.28 ships no pkg-config file: find it by hand.
find_path(MBEDTLS_INCLUDE_DIR mbedtls/ssl.h)
find_library(MBEDTLS_LIB mbedtls)
find_library(MBEDX509_LIB mbedx509)
find_library(MBEDCRYPTO_LIB mbedcrypto)
if(NOT MBEDTLS_INCLUDE_DIR OR NOT MBEDTLS_LIB OR NOT MBEDX509_LIB OR NOT MBEDCRYPTO_LIB)
  message(FATAL_ERROR "weft needs mbedTLS 2.28 and did not find it. "
    "On Debian/Ubuntu: apt-get install libmbedtls-dev")
endif()
find_package(Threads REQUIRED)

add_library(weft_deps INTERFACE)
target_link_libraries(weft_deps INTERFACE PkgConfig::SQLITE3 PkgConfig::SODIUM
  ${MBEDTLS_LIB} ${MBEDX509_LIB} ${MBEDCRYPTO_LIB} Threads::Threads)
target_include_directories(weft_deps INTERFACE ${MBEDTLS_INCLUDE_DIR})
set(WEFT_DEPS_LINK sqlite3 sodium mbedtls mbedx509 mbedcrypto pthread)
