package gateway

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"regexp"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	_ "google.golang.org/genproto/googleapis/rpc/errdetails" // lets error details of these types be rendered as JSON
	spb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// errorJSON renders a google.rpc.Status as the gateway's error body. It emits
// unpopulated fields, so every error has "code", "message" and "details"
// (possibly empty), whatever the marshaler does for ordinary responses.
var errorJSON = protojson.MarshalOptions{EmitUnpopulated: true}

// marshalStatus renders st as {"code": ..., "message": ..., "details": [...]}.
// Details whose type this binary does not know cannot be rendered as JSON;
// they are dropped rather than losing the code and message.
func marshalStatus(st *spb.Status) []byte {
	b, err := errorJSON.Marshal(st)
	if err != nil {
		st = &spb.Status{Code: st.GetCode(), Message: st.GetMessage()}
		b, _ = errorJSON.Marshal(st) // cannot fail without details
	}
	return compact(b)
}

// compact removes the insignificant whitespace protojson inserts. protojson
// makes its output deliberately unstable (a space or not after ',' and ':',
// chosen per binary), so without this the embedded gateway and
// tether-gateway would format the same answer differently.
func compact(b []byte) []byte {
	var buf bytes.Buffer
	buf.Grow(len(b))
	if err := json.Compact(&buf, b); err != nil {
		return b
	}
	return buf.Bytes()
}

// writeStatus writes st as the JSON error body with the given HTTP status.
func writeStatus(w http.ResponseWriter, httpStatus int, st *status.Status) {
	h := w.Header()
	h.Del("Content-Length")
	h.Del("Trailer")
	h.Del("Transfer-Encoding")
	h.Set("Content-Type", "application/json")
	h.Set("X-Content-Type-Options", "nosniff")
	if st.Code() == codes.Unauthenticated {
		h.Set("WWW-Authenticate", "Bearer")
	}
	w.WriteHeader(httpStatus)
	_, _ = w.Write(marshalStatus(st.Proto()))
}

// writeError writes an error the gateway raises itself.
func writeError(w http.ResponseWriter, httpStatus int, code codes.Code, format string, args ...any) {
	writeStatus(w, httpStatus, status.New(code, fmt.Sprintf(format, args...)))
}

// handleError is the runtime.ErrorHandlerFunc: a gRPC status from a server, or
// an error of the generated code (a bad path or query parameter, a body that
// does not decode), mapped with runtime.HTTPStatusFromCode.
func handleError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, _ *http.Request, err error) {
	httpStatus := 0
	if hse := (*runtime.HTTPStatusError)(nil); errors.As(err, &hse) {
		httpStatus, err = hse.HTTPStatus, hse.Err
	}
	st := status.Convert(err)
	if st.Code() == codes.InvalidArgument || httpStatus == http.StatusBadRequest {
		if short := shortMessage(st.Message()); short != st.Message() {
			st = status.New(st.Code(), short)
		}
	}
	if httpStatus == 0 {
		httpStatus = runtime.HTTPStatusFromCode(st.Code())
	} else if st.Code() == codes.Unknown && httpStatus == http.StatusBadRequest {
		st = status.New(codes.InvalidArgument, st.Message())
	}
	writeStatus(w, httpStatus, st)
}

var (
	parsingField = regexp.MustCompile(`^parsing field "([^"]+)": (.*)$`)
	strconvError = regexp.MustCompile(`^strconv\.Parse(Int|Uint|Float|Bool): parsing "(.*)": (invalid syntax|value out of range)$`)
	// protojson writes "proto:" and then a space or, in some binaries, a
	// non-breaking space (protobuf-go varies it on purpose, so that nobody
	// relies on its error text): accept both.
	protoPos = regexp.MustCompile(`^proto:[ \x{00a0}]\(line (\d+):(\d+)\):[ \x{00a0}]`)
)

// shortMessage rewrites the messages grpc-gateway and protojson produce for
// a bad query parameter or body into the short form of the server's own
// ("page_size: \"many\" is not a number"), without Go package prefixes.
func shortMessage(msg string) string {
	if m := parsingField.FindStringSubmatch(msg); m != nil {
		field, rest := m[1], m[2]
		if c := strconvError.FindStringSubmatch(rest); c != nil {
			switch {
			case c[3] == "value out of range":
				return fmt.Sprintf("%s: %q is out of range", field, c[2])
			case c[1] == "Bool":
				return fmt.Sprintf("%s: %q is not true or false", field, c[2])
			}
			return fmt.Sprintf("%s: %q is not a number", field, c[2])
		}
		return field + ": " + rest
	}
	if m := protoPos.FindStringSubmatch(msg); m != nil {
		return fmt.Sprintf("request body, line %s column %s: %s", m[1], m[2], msg[len(m[0]):])
	}
	return msg
}

// handleRoutingError is the runtime.RoutingErrorHandlerFunc: no route (404), a
// route for another method (405) or an unparsable path (400).
func (g *Gateway) handleRoutingError(_ context.Context, _ *runtime.ServeMux, _ runtime.Marshaler, w http.ResponseWriter, r *http.Request, httpStatus int) {
	switch httpStatus {
	case http.StatusNotFound:
		writeError(w, httpStatus, codes.NotFound, "no route for %s %s", r.Method, r.URL.Path)
	case http.StatusMethodNotAllowed:
		w.Header().Set("Allow", g.routes.allowHeader(r.URL.Path))
		writeError(w, httpStatus, codes.Unimplemented, "method %s is not allowed for %s", r.Method, r.URL.Path)
	case http.StatusBadRequest:
		writeError(w, httpStatus, codes.InvalidArgument, "malformed request path %q", r.URL.Path)
	default:
		writeError(w, http.StatusInternalServerError, codes.Internal, "unexpected routing error %d", httpStatus)
	}
}

// jsonMarshaler is the only runtime.Marshaler of the gateway, for every
// Content-Type and Accept value: protojson with lowerCamelCase field names,
// enums as their names, unknown fields rejected, and default values
// emitted (EmitDefaultValues), so that a frontend can rely on the shape:
// booleans and counts are always present ("online": false, "exitCode": 0),
// lists are always arrays ("devices": []) and maps objects; a message field
// that is not set (an offline device's "session") is left out, never null. It
// labels streams application/x-ndjson (one JSON object per line) and renders
// a stream's error line with the same error body as a unary error.
type jsonMarshaler struct {
	*runtime.JSONPb
}

func newJSONMarshaler() *jsonMarshaler {
	return &jsonMarshaler{JSONPb: &runtime.JSONPb{
		MarshalOptions:   protojson.MarshalOptions{UseProtoNames: false, EmitDefaultValues: true},
		UnmarshalOptions: protojson.UnmarshalOptions{DiscardUnknown: false},
	}}
}

// StreamContentType implements runtime.StreamContentType.
func (*jsonMarshaler) StreamContentType(any) string { return "application/x-ndjson" }

// Marshal renders the {"error": status} chunk of a stream with marshalStatus
// and everything else with protojson.
func (m *jsonMarshaler) Marshal(v any) ([]byte, error) {
	if chunk, ok := v.(map[string]proto.Message); ok && len(chunk) == 1 {
		if st, ok := chunk["error"].(*spb.Status); ok {
			b := append([]byte(`{"error":`), marshalStatus(st)...)
			return append(b, '}'), nil
		}
	}
	b, err := m.JSONPb.Marshal(v)
	if err != nil {
		return nil, err
	}
	return compact(b), nil
}
