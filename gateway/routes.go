package gateway

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// routeTable knows which methods each route accepts, from the OpenAPI
// document (generated from the same HTTP rules as the handlers) plus the
// gateway's own GET routes. grpc-gateway routes by pattern; the table adds
// what it cannot tell: the Allow header of a 405, and that GET
// /v1/devices/d1:command is the wrong method for :command, not GetDevice of a
// device named "d1:command".
type routeTable []route

type route struct {
	path    *regexp.Regexp // the template, {param} matching one segment
	verb    bool           // the template ends in a custom method (":command")
	methods []string       // upper case, sorted
}

// templateParam is a path parameter in an OpenAPI path template.
var templateParam = regexp.MustCompile(`\{[^/{}]+\}`)

// newRouteTable reads the paths of an OpenAPI v2 document and adds extra GET
// paths.
func newRouteTable(doc []byte, extraGET ...string) (routeTable, error) {
	var d struct {
		Paths map[string]map[string]json.RawMessage `json:"paths"`
	}
	if err := json.Unmarshal(doc, &d); err != nil {
		return nil, fmt.Errorf("gateway: OpenAPI document: %w", err)
	}
	for _, p := range extraGET {
		d.Paths[p] = map[string]json.RawMessage{"get": nil}
	}
	var t routeTable
	for tmpl, ops := range d.Paths {
		var methods []string
		for m := range ops {
			methods = append(methods, strings.ToUpper(m))
		}
		sort.Strings(methods)
		literal := templateParam.Split(tmpl, -1)
		for i := range literal {
			literal[i] = regexp.QuoteMeta(literal[i])
		}
		last := tmpl[strings.LastIndex(tmpl, "/")+1:]
		t = append(t, route{
			path:    regexp.MustCompile("^" + strings.Join(literal, "[^/]+") + "$"),
			verb:    strings.Contains(templateParam.ReplaceAllString(last, ""), ":"),
			methods: methods,
		})
	}
	return t, nil
}

// allowed returns the methods accepted at path, or nil for an unknown path.
// A route with a custom method takes precedence over one whose last
// parameter would swallow it.
func (t routeTable) allowed(path string) []string {
	var plain, verb []string
	for _, r := range t {
		if !r.path.MatchString(path) {
			continue
		}
		if r.verb {
			verb = append(verb, r.methods...)
		} else {
			plain = append(plain, r.methods...)
		}
	}
	if len(verb) > 0 {
		plain = verb
	}
	slices.Sort(plain)
	return slices.Compact(plain)
}

// allowHeader is the Allow header for path; GET when the path is unknown.
func (t routeTable) allowHeader(path string) string {
	if m := t.allowed(path); len(m) > 0 {
		return strings.Join(m, ", ")
	}
	return http.MethodGet
}
