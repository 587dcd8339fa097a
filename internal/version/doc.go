// Package version owns the version string every binary reports (--version,
// the agent's Hello, the server's node info): the version and commit stamped
// at link time by the release build (Makefile, packaging/build.sh), else the
// module version and the VCS revision from the build info. It must not read
// anything at run time beyond the binary's own build info.
package version
