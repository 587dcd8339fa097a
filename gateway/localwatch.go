package gateway

import (
	"context"
	"io"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"github.com/grpc-ecosystem/grpc-gateway/v2/utilities"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// LocalWatch serves WatchDevices in the gateway's own process, without a gRPC
// stream in between (Config.LocalWatch; tether-server sets it for its
// in-process gateway). md is the metadata the gateway would have sent with
// the call (authorization, x-request-id); the implementation authorizes it as
// the gRPC call would and returns the status the gRPC call would have ended
// with. send gets the messages in order, from the calling goroutine: cache is
// nil for a message of this watcher alone, and for a message shared by every
// watcher cache(encode) returns encode's result computed once for all of
// them; more says that further messages are already queued.
type LocalWatch = func(ctx context.Context, md metadata.MD, req *tetherv1.WatchDevicesRequest,
	send func(resp *tetherv1.WatchDevicesResponse, cache func(encode func() []byte) []byte, more bool) error) error

// watchPath is the HTTP route of WatchDevices (device_service.proto).
const watchPath = "/v1/devices:watch"

// serveLocalWatch is the watch route when Config.LocalWatch is set. Its
// responses are byte-for-byte those of the generated grpc-gateway handler
// (runtime.ForwardResponseStream: one {"result":…} line per message, an
// {"error":…} line at the end, the same status codes), but each event of the
// server's feed is encoded to JSON once for every watcher of the process, and
// a watcher with more events queued writes them before it flushes.
func (g *Gateway) serveLocalWatch(mux *runtime.ServeMux) runtime.HandlerFunc {
	return func(w http.ResponseWriter, req *http.Request, _ map[string]string) {
		ctx, cancel := context.WithCancel(req.Context())
		defer cancel()
		_, marshaler := runtime.MarshalerForRequest(mux, req)
		actx, err := runtime.AnnotateContext(ctx, mux, req, tetherv1.DeviceService_WatchDevices_FullMethodName, runtime.WithHTTPPathPattern(watchPath))
		if err != nil {
			runtime.HTTPError(ctx, mux, marshaler, w, req, err)
			return
		}
		var in tetherv1.WatchDevicesRequest
		if err := req.ParseForm(); err != nil {
			runtime.HTTPError(actx, mux, marshaler, w, req, status.Errorf(codes.InvalidArgument, "%v", err))
			return
		}
		if err := runtime.PopulateQueryParameters(&in, req.Form, utilities.NewDoubleArray(nil)); err != nil {
			runtime.HTTPError(actx, mux, marshaler, w, req, status.Errorf(codes.InvalidArgument, "%v", err))
			return
		}
		if req.Body != nil {
			_, _ = io.Copy(io.Discard, req.Body)
		}
		md, _ := metadata.FromOutgoingContext(actx)
		out := &watchWriter{w: w, rc: http.NewResponseController(w), marshaler: marshaler}
		w.Header().Set("Transfer-Encoding", "chunked")
		err = g.cfg.LocalWatch(actx, md, &in, out.send)
		if err == nil || out.failed {
			return // the stream ended (io.EOF), or the client is gone
		}
		st := g.streamError(actx, err)
		msg := map[string]proto.Message{"error": st.Proto()}
		if !out.wrote {
			w.Header().Set("Content-Type", marshaler.ContentType(msg))
			w.WriteHeader(runtime.HTTPStatusFromCode(st.Code()))
		}
		buf, err := marshaler.Marshal(msg)
		if err != nil {
			return
		}
		_, _ = w.Write(append(buf, '\n'))
	}
}

// watchWriter writes the messages of one local watch.
type watchWriter struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	marshaler runtime.Marshaler
	wrote     bool // a message was written (the status line is sent)
	failed    bool // a write failed: the client is gone
}

func (o *watchWriter) line(resp *tetherv1.WatchDevicesResponse) []byte {
	buf, err := o.marshaler.Marshal(map[string]any{"result": resp})
	if err != nil {
		return nil
	}
	return append(buf, '\n')
}

func (o *watchWriter) send(resp *tetherv1.WatchDevicesResponse, cache func(func() []byte) []byte, more bool) error {
	var line []byte
	if cache != nil {
		line = cache(func() []byte { return o.line(resp) })
	} else {
		line = o.line(resp)
	}
	if line == nil {
		return status.Error(codes.Internal, "watch devices: cannot encode an event")
	}
	if !o.wrote {
		if sct, ok := o.marshaler.(runtime.StreamContentType); ok {
			o.w.Header().Set("Content-Type", sct.StreamContentType(resp))
		} else {
			o.w.Header().Set("Content-Type", o.marshaler.ContentType(resp))
		}
	}
	if _, err := o.w.Write(line); err != nil {
		o.failed = true
		return status.Errorf(codes.Canceled, "watch devices: client gone: %v", err)
	}
	o.wrote = true
	if more {
		return nil // more events are queued: write them first, flush once
	}
	if err := o.rc.Flush(); err != nil {
		o.failed = true
		return status.Errorf(codes.Canceled, "watch devices: client gone: %v", err)
	}
	return nil
}
