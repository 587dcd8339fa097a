package gateway_test

import (
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protojson"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
	"github.com/tetherhq/tether/gateway"
)

// FuzzSendCommandBody drives POST /v1/devices/{deviceId}:command bodies
// through the whole handler to a real gRPC server whose SendCommand always
// succeeds. Whatever the body and device id, the gateway must not panic, must
// answer 200 with a SendCommandResponse or a 4xx JSON error whose code maps to
// its status, and never 5xx: nothing here is the server's fault.
// The seed corpus is in testdata/fuzz/FuzzSendCommandBody.
func FuzzSendCommandBody(f *testing.F) {
	b := startBackend(f, "node-a")
	g, err := gateway.New(f.Context(), gateway.Config{
		Servers:      []string{b.addr},
		MaxBodyBytes: 4096,
		Logger:       slog.New(slog.NewTextHandler(io.Discard, nil)),
	})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = g.Close() })
	h := g.Handler()

	f.Add([]byte(`{"name":"uptime","args":["-p"],"timeout":"5s"}`), "d1")
	f.Add([]byte(`{}`), "d1")

	// Statuses the gateway raises itself, with the code it puts in the body.
	gatewayStatuses := map[int]codes.Code{
		http.StatusNotFound:              codes.NotFound,
		http.StatusMethodNotAllowed:      codes.Unimplemented,
		http.StatusRequestEntityTooLarge: codes.ResourceExhausted,
		http.StatusUnsupportedMediaType:  codes.InvalidArgument,
	}

	f.Fuzz(func(t *testing.T, body []byte, deviceID string) {
		req := httptest.NewRequest("POST", "/v1/devices/"+url.PathEscape(deviceID)+":command", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)

		if rec.Code == http.StatusOK {
			var resp tetherv1.SendCommandResponse
			if err := protojson.Unmarshal(rec.Body.Bytes(), &resp); err != nil || resp.GetCommandId() != "cmd-1" {
				t.Fatalf("200 with body %q: %v", rec.Body, err)
			}
			return
		}
		var e struct {
			Code    *codes.Code       `json:"code"`
			Message *string           `json:"message"`
			Details []json.RawMessage `json:"details"`
		}
		if err := json.Unmarshal(rec.Body.Bytes(), &e); err != nil || e.Code == nil || e.Message == nil || e.Details == nil {
			t.Fatalf("status %d with body %q: not a JSON error (%v)", rec.Code, rec.Body, err)
		}
		if rec.Code >= 500 {
			t.Fatalf("status %d for body %q, device %q: %s", rec.Code, body, deviceID, rec.Body)
		}
		if want, ok := gatewayStatuses[rec.Code]; ok {
			if *e.Code != want {
				t.Fatalf("status %d with code %v", rec.Code, *e.Code)
			}
		} else if runtime.HTTPStatusFromCode(*e.Code) != rec.Code {
			t.Fatalf("status %d does not map code %v (%s)", rec.Code, *e.Code, rec.Body)
		}
	})
}
