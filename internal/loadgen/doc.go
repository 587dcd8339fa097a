// Package loadgen owns the load generator behind cmd/tether-loadgen: it
// simulates many device agents in one process, each with its own
// grpc.ClientConn and so its own TCP connection, so that the server replicas
// see as many real connections as there are simulated devices.
//
// Each simulated agent is one goroutine (plus the goroutines grpc-go keeps
// per connection): it dials, sends Hello, waits for HelloAck and then
// answers Pings and Commands inline from its receive loop, so that only that
// goroutine ever sends on its stream. A configurable fraction behaves like
// legacy agents: no CAPABILITY_PONG and no Pongs.
//
// The package also paces the connects (ramp and a bound on concurrent
// dials), spreads connections over several replicas and loopback source
// addresses, optionally drives DeviceService.SendCommand "echo" calls to
// measure command round trips, keeps the counters, and renders periodic and
// final reports (text and JSON) with the process's fd count, RSS and
// goroutine count. It checks the process's open-file limit before it dials.
//
// It does not parse flags or handle signals; cmd/tether-loadgen does.
package loadgen
