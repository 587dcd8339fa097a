package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// httpCommand sends commands through the JSON gateway at base
// (http://host:port): POST /v1/devices/{id}:command. A non-2xx answer
// becomes a status error with the gRPC code the gateway reported.
func httpCommand(base string, conns int) commandCall {
	client := &http.Client{Transport: &http.Transport{
		MaxIdleConns: conns, MaxIdleConnsPerHost: conns, IdleConnTimeout: time.Minute,
	}}
	base = strings.TrimRight(base, "/")
	return func(ctx context.Context, device string, args []string, timeout time.Duration) (string, string, error) {
		body, _ := json.Marshal(map[string]any{"name": "echo", "args": args, "timeout": timeout.String()})
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, base+"/v1/devices/"+device+":command", bytes.NewReader(body))
		if err != nil {
			return "", "", err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return "", "", status.Error(codes.Unavailable, err.Error())
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
		var out struct {
			Output  string `json:"output"`
			Error   string `json:"error"`
			Code    int    `json:"code"`
			Message string `json:"message"`
		}
		if err := json.Unmarshal(b, &out); err != nil {
			return "", "", status.Errorf(codes.Internal, "HTTP %d: not JSON: %q", resp.StatusCode, b)
		}
		if resp.StatusCode/100 != 2 {
			return "", "", status.Error(codes.Code(out.Code), fmt.Sprintf("HTTP %d: %s", resp.StatusCode, out.Message))
		}
		return out.Output, out.Error, nil
	}
}
