// Package logging owns the construction of the binaries' slog loggers from
// the --log-format and --log-level flags, and the one vocabulary every log
// line uses for disconnect reasons and liveness modes (server and agent
// alike, and the same words as the metrics labels).
package logging

import (
	"fmt"
	"io"
	"log/slog"
	"strings"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// New returns a logger writing text or JSON at the given level. In JSON,
// durations are strings ("1.5s"), as in text, rather than nanoseconds.
func New(w io.Writer, format, level string) (*slog.Logger, error) {
	var lv slog.Level
	if err := lv.UnmarshalText([]byte(strings.ToUpper(level))); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", level)
	}
	opts := &slog.HandlerOptions{Level: lv}
	switch strings.ToLower(format) {
	case "text", "":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		opts.ReplaceAttr = durationsAsStrings
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, fmt.Errorf("--log-format %q: want text or json", format)
}

// Check validates --log-format and --log-level without building a logger,
// so that a main can refuse bad values before doing anything else.
func Check(format, level string) error {
	_, err := New(io.Discard, format, level)
	return err
}

func durationsAsStrings(_ []string, a slog.Attr) slog.Attr {
	if a.Value.Kind() == slog.KindDuration {
		return slog.String(a.Key, a.Value.Duration().String())
	}
	return a
}

// Reason is the word for a disconnect reason in logs and metric labels:
// the enum name without its prefix, lowercase (DISCONNECT_REASON_CLIENT_CLOSED
// is "client_closed"); "unknown" for a value this binary does not know.
func Reason(r tetherv1.DisconnectReason) string {
	name, ok := tetherv1.DisconnectReason_name[int32(r)]
	if !ok {
		return "unknown"
	}
	return strings.ToLower(strings.TrimPrefix(name, "DISCONNECT_REASON_"))
}

// Mode is the word for a liveness mode: "app_pong", "transport_only" or
// "unspecified".
func Mode(m tetherv1.LivenessMode) string {
	switch m {
	case tetherv1.LivenessMode_LIVENESS_MODE_APP_PONG:
		return "app_pong"
	case tetherv1.LivenessMode_LIVENESS_MODE_TRANSPORT_ONLY:
		return "transport_only"
	}
	return "unspecified"
}
