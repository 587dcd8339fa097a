package gateway

import (
	"net/http"
	"strings"

	"github.com/grpc-ecosystem/grpc-gateway/v2/runtime"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/reflect/protoreflect"

	tetherv1 "github.com/tetherhq/tether/api/tether/v1"
)

// enumParams are the query parameters whose values are enums. Besides the
// full names (PRESENCE_FILTER_ONLINE) and numbers grpc-gateway accepts,
// the gateway takes the short lowercase form a frontend would write:
// presence=online.
var enumParams = map[string]protoreflect.EnumDescriptor{
	"presence": tetherv1.PresenceFilter(0).Descriptor(),
}

// shortEnums is a runtime.Middleware that rewrites short lowercase enum
// values in the query string to their full names, and refuses unknown ones
// with a 400 that lists the accepted values.
func (g *Gateway) shortEnums(next runtime.HandlerFunc) runtime.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request, params map[string]string) {
		q := r.URL.Query()
		changed := false
		for name, ed := range enumParams {
			vals, ok := q[name]
			if !ok {
				continue
			}
			for i, v := range vals {
				full, ok := enumValue(ed, v)
				if !ok {
					writeError(w, http.StatusBadRequest, codes.InvalidArgument, "%s: %q is not one of %s", name, v, strings.Join(shortNames(ed), ", "))
					return
				}
				if full != v {
					vals[i], changed = full, true
				}
			}
		}
		if changed {
			r.URL.RawQuery = q.Encode()
		}
		next(w, r, params)
	}
}

// enumPrefix is the part every value name of ed starts with
// (PRESENCE_FILTER_ for PresenceFilter).
func enumPrefix(ed protoreflect.EnumDescriptor) string {
	return strings.ToUpper(toSnake(string(ed.Name()))) + "_"
}

// enumValue maps v (ONLINE, online, PRESENCE_FILTER_ONLINE or a number) to
// the value name grpc-gateway parses.
func enumValue(ed protoreflect.EnumDescriptor, v string) (string, bool) {
	if v == "" {
		return v, true
	}
	if v[0] >= '0' && v[0] <= '9' || v[0] == '-' {
		return v, true // a number: grpc-gateway's own check applies
	}
	for _, cand := range []string{v, strings.ToUpper(v), enumPrefix(ed) + strings.ToUpper(v)} {
		if ev := ed.Values().ByName(protoreflect.Name(cand)); ev != nil {
			return cand, true
		}
	}
	return "", false
}

// shortNames lists the short forms of ed's values, without UNSPECIFIED.
func shortNames(ed protoreflect.EnumDescriptor) []string {
	var out []string
	for i := range ed.Values().Len() {
		n := strings.TrimPrefix(string(ed.Values().Get(i).Name()), enumPrefix(ed))
		if n != "UNSPECIFIED" {
			out = append(out, strings.ToLower(n))
		}
	}
	return out
}

// toSnake turns PresenceFilter into Presence_Filter.
func toSnake(s string) string {
	var b strings.Builder
	for i, c := range s {
		if i > 0 && c >= 'A' && c <= 'Z' {
			b.WriteByte('_')
		}
		b.WriteRune(c)
	}
	return b.String()
}
