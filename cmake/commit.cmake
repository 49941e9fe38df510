# Writes OUT (build_commit.h) with the commit the tree is at, "+dirty" when
# tracked files differ from it. Run at every build; the file is rewritten
# only when the commit changes, so an unchanged tree recompiles nothing.
# Without git (a source tarball), RUNBOOK_COMMIT or "unknown".
set(commit "")
if(DEFINED ENV{RUNBOOK_COMMIT})
  set(commit "$ENV{RUNBOOK_COMMIT}")
else()
  find_program(GIT git)
  if(GIT)
    execute_process(COMMAND ${GIT} -C ${SRC} rev-parse --short=12 HEAD
                    OUTPUT_VARIABLE commit OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET
                    RESULT_VARIABLE rc)
    if(rc EQUAL 0)
      execute_process(COMMAND ${GIT} -C ${SRC} diff --quiet HEAD -- RESULT_VARIABLE dirty ERROR_QUIET)
      if(NOT dirty EQUAL 0)
        string(APPEND commit "+dirty")
      endif()
    else()
      set(commit "")
    endif()
  endif()
endif()
if(commit STREQUAL "")
  set(commit "unknown")
endif()
set(text "#define RB_BUILD_COMMIT \"${commit}\"\n")
if(EXISTS ${OUT})
  file(READ ${OUT} old)
endif()
if(NOT old STREQUAL text)
  file(WRITE ${OUT} "${text}")
endif()
