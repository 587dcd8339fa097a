// Package packaging owns how Tether is shipped: the release build of each
// binary (build.sh: static, -trimpath, stripped, version and commit
// stamped), the .deb and .rpm packages built with nfpm (package.sh,
// nfpm/*.yaml, the maintainer scripts in scripts/), the whole release
// (dist.sh, behind `make dist` / `make packages`) and the footprint figures
// of docs/BENCHMARKS.md (footprint.sh, `make footprint`). The units and
// example configs it packages stay where they live (agent/systemd,
// server/systemd, gateway/systemd) and are read from there at build time.
//
// There is no Go code to import here: the package's test is the proof that
// the agent's package builds reproducibly, carries the right files, modes
// and conffiles, and installs, upgrades, removes and purges with dpkg.
package packaging
