//go:build race

package session_test

// raceDetector is true when the tests run under -race. The race runtime's
// own stack depot crashed once (SIGSEGV inside ThreadSanitizer, not in
// Tether code) during the 1,500-bubble interleaving test on CI, so the
// -race run replays fewer interleavings and `make test` replays the full
// count without the race detector (see the Makefile's test target).
const raceDetector = true
