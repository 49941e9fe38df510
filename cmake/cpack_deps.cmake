# Read by cpack (CPACK_PROJECT_CONFIG_FILE): the package's Depends, from
# dpkg-shlibdeps run on the one binary. CPack's own
# CPACK_DEBIAN_PACKAGE_SHLIBDEPS runs `file` on every packaged file first
# and takes 20 s for the same answer.
if(CPACK_GENERATOR STREQUAL "DEB")
  set(tmp "${CPACK_PACKAGE_DIRECTORY}/_shlibdeps")
  file(MAKE_DIRECTORY "${tmp}/debian")
  file(WRITE "${tmp}/debian/control" "Source: runbook\n\nPackage: runbook\nArchitecture: any\n")
  execute_process(COMMAND dpkg-shlibdeps -O -e "${CPACK_RUNBOOK_BINARY}"
                  WORKING_DIRECTORY "${tmp}" RESULT_VARIABLE rc
                  OUTPUT_VARIABLE out ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
  file(REMOVE_RECURSE "${tmp}")
  if(NOT rc EQUAL 0 OR NOT out MATCHES "^shlibs:Depends=")
    message(FATAL_ERROR "dpkg-shlibdeps ${CPACK_RUNBOOK_BINARY} failed: ${err}")
  endif()
  string(REGEX REPLACE "^shlibs:Depends=" "" CPACK_DEBIAN_PACKAGE_DEPENDS "${out}")
  if(CPACK_RUNBOOK_EXTRA_DEPENDS)
    string(APPEND CPACK_DEBIAN_PACKAGE_DEPENDS ", ${CPACK_RUNBOOK_EXTRA_DEPENDS}")
  endif()
endif()
