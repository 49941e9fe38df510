# The Debian package: `scripts/package.sh` (or `cpack -G DEB` in a build
# directory). Depends are computed by dpkg-shlibdeps from the libraries the
# binary links (Lua, jansson, libyaml, OpenSSL, libc: cmake/cpack_deps.cmake); the libraries it
# dlopens when a runbook needs them (libcurl, libpq, hiredis) are
# Recommends, by the same package names src/dynlib.c tells users to
# install when one cannot be loaded (PKG_* in CMakeLists.txt).
set(CPACK_GENERATOR DEB)
set(CPACK_PACKAGE_NAME runbook)
set(CPACK_PACKAGE_VERSION ${PROJECT_VERSION})
set(CPACK_PACKAGE_VENDOR "runbook")
set(CPACK_PACKAGE_CONTACT "runbook maintainers <runbook@localhost>")
set(CPACK_PACKAGE_DESCRIPTION_SUMMARY "resumable, audited deploy runbooks in Lua")
set(CPACK_PACKAGE_DESCRIPTION "runbook turns a deploy checklist into a resumable, audited script:
Kubernetes, PostgreSQL migrations and backups, object storage, HTTP checks,
secrets, manual steps and a hash-chained journal of who did what, when.")
set(CPACK_PACKAGING_INSTALL_PREFIX /usr)
set(CPACK_DEBIAN_FILE_NAME DEB-DEFAULT)
set(CPACK_DEBIAN_PACKAGE_SECTION admin)
set(CPACK_DEBIAN_PACKAGE_PRIORITY optional)
set(CPACK_DEBIAN_PACKAGE_SHLIBDEPS OFF)
set(CPACK_RUNBOOK_BINARY ${CMAKE_BINARY_DIR}/runbook)
set(CPACK_PROJECT_CONFIG_FILE ${CMAKE_SOURCE_DIR}/cmake/cpack_deps.cmake)
set(CPACK_DEBIAN_PACKAGE_RECOMMENDS "${PKG_CURL}, ${PKG_PQ}, ${PKG_HIREDIS}, ${PKG_MHD}")
# libcrypto is dlopen'ed too (src/dl_crypto.h), but sealing a secret memo is
# part of every engine: it stays a Depends, added to what dpkg-shlibdeps finds
set(CPACK_RUNBOOK_EXTRA_DEPENDS "${PKG_CRYPTO}")
set(CPACK_DEBIAN_PACKAGE_SUGGESTS "lua-busted, postgresql-client")
set(CPACK_STRIP_FILES OFF)
include(CPack)
