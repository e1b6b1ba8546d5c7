# Bindings run against the shared library; under sanitizers the runtime
# would have to be preloaded into the interpreter, so not there.
find_program(WEFT_SYSTEM_PYTHON NAMES python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(WEFT_SYSTEM_PYTHON AND NOT WEFT_SANITIZE)
  add_test(NAME bindings_python
    COMMAND ${CMAKE_COMMAND} -E env WEFT_LIB=$<TARGET_FILE:weft>
      ${WEFT_SYSTEM_PYTHON} ${PROJECT_SOURCE_DIR}/bindings/python/test_weft.py -v)
  set_tests_properties(bindings_python PROPERTIES TIMEOUT 120)
endif()

# Java (JNI): built when a JDK is present.
# Only the JNI headers are needed: look beside the javac in use.
find_package(Java QUIET COMPONENTS Development)
if(Java_JAVAC_EXECUTABLE)
  get_filename_component(_javac_real ${Java_JAVAC_EXECUTABLE} REALPATH)
  get_filename_component(_java_home ${_javac_real} DIRECTORY)
  get_filename_component(_java_home ${_java_home} DIRECTORY)
  find_path(WEFT_JNI_INCLUDE jni.h PATHS ${_java_home}/include $ENV{JAVA_HOME}/include NO_DEFAULT_PATH)
  find_path(WEFT_JNI_MD_INCLUDE jni_md.h PATHS ${_java_home}/include/linux $ENV{JAVA_HOME}/include/linux NO_DEFAULT_PATH)
endif()
if(WEFT_JNI_INCLUDE AND WEFT_JNI_MD_INCLUDE AND NOT WEFT_SANITIZE)
  set(JNI_INCLUDE_DIRS ${WEFT_JNI_INCLUDE} ${WEFT_JNI_MD_INCLUDE})
  add_library(weft_jni SHARED ${PROJECT_SOURCE_DIR}/bindings/java/weft_jni.c)
  target_include_directories(weft_jni PRIVATE ${JNI_INCLUDE_DIRS})
  target_compile_options(weft_jni PRIVATE -Wall -Wextra -Werror)
  target_link_libraries(weft_jni PRIVATE weft_static)
  set(_jout ${CMAKE_CURRENT_BINARY_DIR}/java)
  add_test(NAME bindings_java
    COMMAND bash -c "mkdir -p '${_jout}' && '${Java_JAVAC_EXECUTABLE}' -d '${_jout}' \
'${PROJECT_SOURCE_DIR}/bindings/java/org/weft/Weft.java' '${PROJECT_SOURCE_DIR}/bindings/java/WeftTest.java' \
&& '${Java_JAVA_EXECUTABLE}' -Dweft.jni=$<TARGET_FILE:weft_jni> -cp '${_jout}' WeftTest")
  set_tests_properties(bindings_java PROPERTIES TIMEOUT 180)
endif()
