// Command tether-loadgen simulates many Tether device agents in one process
// to load-test server replicas: every simulated agent has its own gRPC
// connection (its own TCP connection) and keeps one Connect stream, answers
// Pings (unless it plays a legacy agent) and echo Commands, and optionally
// the process drives DeviceService.SendCommand calls to measure command
// round trips. It prints progress lines to stderr and a final report to
// stdout (text, or JSON with --json).
//
// This package owns only the flags, the environment (TETHER_LOADGEN_<FLAG>),
// signal handling and output; the simulation is internal/loadgen.
//
// One process holds at most (open-file hard limit - 100) connections; run
// several processes with distinct --id-prefix values (and --source-ips
// ranges) to go beyond.
package main
