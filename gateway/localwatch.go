package gateway

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"syscall"
	"time"

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
//
// write, when not nil, may be called by the implementation from another
// goroutine (the replica's event feed) with the lines of further events
// (encode's results): it writes them to the client without blocking and
// returns false when it cannot take them now, so the implementation hands
// them to send instead. The gateway passes it for an HTTP/1.1 watch over a
// plain TCP connection, which it takes over (http.Hijacker) after the first
// message: a fan-out to thousands of watchers then costs one write(2) per
// watcher and no goroutine wake-up (docs/PERFORMANCE.md).
type LocalWatch = func(ctx context.Context, md metadata.MD, req *tetherv1.WatchDevicesRequest,
	send func(resp *tetherv1.WatchDevicesResponse, cache func(encode func() []byte) []byte, more bool) error,
	encode func(resp *tetherv1.WatchDevicesResponse) []byte, write func(lines [][]byte) bool) error

// watchPath is the HTTP route of WatchDevices (device_service.proto).
const watchPath = "/v1/devices:watch"

// endWriteTimeout bounds the last writes of a taken-over watch connection
// (its error line and last chunk) when the client has stopped reading.
const endWriteTimeout = 5 * time.Second

// maxClientBytes is how much a client may send on a taken-over watch
// connection after its request before the watch is ended: an HTTP/1.1 client
// sends nothing while it reads a response.
const maxClientBytes = 4 << 10

// serveLocalWatch is the watch route when Config.LocalWatch is set. Its
// responses are byte-for-byte those of the generated grpc-gateway handler
// (runtime.ForwardResponseStream: one {"result":…} line per message, an
// {"error":…} line at the end, the same status codes), but each event of the
// server's feed is encoded to JSON once for every watcher of the process, and
// a watcher with more events queued writes them before it flushes. An
// HTTP/1.1 watch over plain TCP is answered with "Connection: close" and
// taken over after its first message (see LocalWatch's write).
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
		out := &watchWriter{w: w, rc: http.NewResponseController(w), marshaler: marshaler, cancel: cancel, timeout: g.cfg.WatchWriteTimeout}
		w.Header().Set("Transfer-Encoding", "chunked")
		var write func([][]byte) bool
		if req.ProtoMajor == 1 && req.TLS == nil {
			out.takeOver = true
			w.Header().Set("Connection", "close")
			write = out.write
		}
		defer out.end()
		err = g.cfg.LocalWatch(actx, md, &in, out.send, out.line, write)
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
		out.last = append(buf, '\n')
	}
}

// watchWriter writes the messages of one local watch: through the
// ResponseWriter until the first message is out, then, for an HTTP/1.1 watch
// over plain TCP, as chunks on the taken-over connection, from the watch's
// goroutine (send) and from the replica's event feed (write).
type watchWriter struct {
	w         http.ResponseWriter
	rc        *http.ResponseController
	marshaler runtime.Marshaler
	cancel    context.CancelFunc // ends the watch (the client is gone)
	timeout   time.Duration      // bounds each blocking write (Config.WatchWriteTimeout)
	takeOver  bool               // take the connection over after the first message
	wrote     bool               // a message was written (the status line is sent)
	failed    bool               // a write of send failed: the client is gone
	last      []byte             // the error line to end the stream with

	mu   sync.Mutex      // serializes writes to conn: send, write and end
	conn net.Conn        // the taken-over connection (nil before), set under mu
	raw  syscall.RawConn // conn's socket (nil: conn is not one), set under mu
	out  []byte          // the chunk being assembled, under mu
	gone bool            // a write to conn failed, under mu
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
	if o.conn != nil { // only send sets it
		return o.sendChunk(line, more)
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
	if o.takeOver {
		o.takeOver = false
		o.hijack()
	}
	return nil
}

// hijack takes the connection over once the response's headers and first
// chunk are out (they were flushed). If it cannot, the watch goes on through
// the ResponseWriter.
func (o *watchWriter) hijack() {
	conn, _, err := o.rc.Hijack()
	if err != nil {
		return
	}
	// The ResponseWriter's writes set deadlines on conn (deadlineWriter);
	// the direct write's non-blocking write(2) must not inherit one.
	_ = conn.SetWriteDeadline(time.Time{})
	o.mu.Lock()
	o.conn = conn
	if sc, ok := conn.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			o.raw = raw
		}
	}
	o.mu.Unlock()
	// The server no longer reads the connection, so nothing else would
	// notice that the client has gone: read until it closes.
	go func() {
		_, _ = io.Copy(io.Discard, io.LimitReader(conn, maxClientBytes))
		o.cancel()
	}()
}

// chunk appends one HTTP/1.1 chunk of data to b.
func chunk(b []byte, data ...[]byte) []byte {
	n := 0
	for _, d := range data {
		n += len(d)
	}
	b = strconv.AppendInt(b, int64(n), 16)
	b = append(b, "\r\n"...)
	for _, d := range data {
		b = append(b, d...)
	}
	return append(b, "\r\n"...)
}

// sendChunk is send on the taken-over connection: the lines of consecutive
// messages (more) go out as one chunk, with a blocking write.
func (o *watchWriter) sendChunk(line []byte, more bool) error {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.out = append(o.out, line...)
	if more {
		return nil
	}
	b := chunk(nil, o.out)
	o.out = o.out[:0]
	if o.gone { // a remainder's write failed: the client is gone or stalled
		o.failed = true
		return status.Error(codes.Canceled, "watch devices: client gone")
	}
	_, err := o.blockingWrite(b)
	if err != nil {
		o.gone, o.failed = true, true
		return status.Errorf(codes.Canceled, "watch devices: client gone: %v", err)
	}
	return nil
}

// write is the feed's direct write (LocalWatch): the lines as one chunk, in
// one non-blocking write(2). A chunk the socket takes only part of is
// finished by a goroutine that holds the lock until it is out, so events stay
// in order and the feed's fan-out never waits for a client.
func (o *watchWriter) write(lines [][]byte) bool {
	if !o.mu.TryLock() {
		return false // send or a write's remainder is writing: queue
	}
	if o.gone {
		o.mu.Unlock()
		return true // nobody to write to: drop
	}
	if o.raw == nil || len(o.out) > 0 {
		o.mu.Unlock()
		return false // not taken over (yet), or send is assembling a chunk
	}
	b := chunk(o.out, lines...)
	n, werr := 0, error(nil)
	if err := o.raw.Write(func(fd uintptr) bool {
		for {
			n, werr = syscall.Write(int(fd), b)
			if werr != syscall.EINTR {
				return true // never wait for the socket: that is the remainder's job
			}
		}
	}); err != nil {
		werr = err
	}
	if werr == syscall.EAGAIN {
		n, werr = 0, nil
	}
	if werr != nil {
		o.gone = true
		o.out = b[:0]
		o.mu.Unlock()
		o.cancel()
		return true
	}
	if n == len(b) {
		o.out = b[:0]
		o.mu.Unlock()
		return true
	}
	rest := bytes.Clone(b[n:])
	o.out = b[:0]
	go func() {
		defer o.mu.Unlock()
		if _, err := o.blockingWrite(rest); err != nil {
			o.gone = true
			o.cancel()
		}
	}()
	return true
}

// blockingWrite writes b to the taken-over connection within o.timeout (a
// client that stops reading is cut off, not waited for), then clears the
// deadline so the direct write's next write(2) does not inherit it. Called
// with o.mu held.
func (o *watchWriter) blockingWrite(b []byte) (int, error) {
	_ = o.conn.SetWriteDeadline(time.Now().Add(o.timeout))
	n, err := o.conn.Write(b)
	if err == nil {
		_ = o.conn.SetWriteDeadline(time.Time{})
	}
	return n, err
}

// end finishes a taken-over connection: the error line if any, the last
// chunk, and close. Writes that a client which stopped reading holds up fail
// after endWriteTimeout.
func (o *watchWriter) end() {
	conn := o.conn // set by send, on this goroutine; the lock may be held by a stalled write
	if conn == nil {
		if o.last != nil && !o.failed {
			_, _ = o.w.Write(o.last)
		}
		return
	}
	// A deadline now cuts a write that holds the lock short; set again
	// under the lock, because that write clears it when it succeeds.
	_ = conn.SetWriteDeadline(time.Now().Add(endWriteTimeout))
	o.mu.Lock()
	defer o.mu.Unlock()
	_ = conn.SetWriteDeadline(time.Now().Add(endWriteTimeout))
	if !o.gone {
		var b []byte
		if len(o.out) > 0 || o.last != nil {
			b = chunk(b, o.out, o.last)
		}
		b = append(b, "0\r\n\r\n"...)
		_, _ = conn.Write(b)
	}
	o.gone = true
	_ = conn.Close()
}
