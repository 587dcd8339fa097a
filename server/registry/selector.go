package registry

import (
	"fmt"
	"slices"
	"strings"
)

// Selector is a parsed label selector: every requirement must hold. The
// syntax is Kubernetes' (equality- and set-based):
//
//	env=prod  env==prod  env!=prod  env in (prod,staging)  env notin (dev)  env  !env
//
// requirements separated by commas. As in Kubernetes, != and notin also
// match a device without the label. The nil Selector matches everything.
type Selector []Requirement

// Operator is what a Requirement tests.
type Operator string

// The operators ParseSelector understands.
const (
	OpEquals       Operator = "="
	OpNotEquals    Operator = "!="
	OpIn           Operator = "in"
	OpNotIn        Operator = "notin"
	OpExists       Operator = "exists"
	OpDoesNotExist Operator = "!"
)

// Requirement is one term of a Selector.
type Requirement struct {
	Key    string
	Op     Operator
	Values []string // one for = and !=, one or more for in and notin
}

// Matches reports whether labels satisfy every requirement.
func (s Selector) Matches(labels map[string]string) bool {
	for _, r := range s {
		if !r.Matches(labels) {
			return false
		}
	}
	return true
}

// Matches reports whether labels satisfy r.
func (r Requirement) Matches(labels map[string]string) bool {
	v, ok := labels[r.Key]
	switch r.Op {
	case OpEquals, OpIn:
		return ok && slices.Contains(r.Values, v)
	case OpNotEquals, OpNotIn:
		return !ok || !slices.Contains(r.Values, v)
	case OpExists:
		return ok
	case OpDoesNotExist:
		return !ok
	}
	return false
}

// MaxSelectorLength bounds a selector's text.
const MaxSelectorLength = 4096

// ParseSelector parses a label selector (see Selector). An empty string is
// the nil Selector. The error says what is wrong and what is supported, for
// a 400 / INVALID_ARGUMENT.
func ParseSelector(s string) (Selector, error) {
	if len(s) > MaxSelectorLength {
		return nil, fmt.Errorf("label_selector: longer than %d bytes", MaxSelectorLength)
	}
	var sel Selector
	for _, term := range splitTerms(s) {
		term = strings.TrimSpace(term)
		if term == "" {
			if strings.TrimSpace(s) == "" {
				return nil, nil
			}
			return nil, fmt.Errorf("label_selector %q: empty requirement (a stray comma?)", s)
		}
		r, err := parseRequirement(term)
		if err != nil {
			return nil, fmt.Errorf("label_selector: %q: %w (supported: k=v, k==v, k!=v, k in (a,b), k notin (a,b), k, !k)", term, err)
		}
		sel = append(sel, r)
	}
	return sel, nil
}

// splitTerms splits at the commas outside parentheses.
func splitTerms(s string) []string {
	var out []string
	depth, start := 0, 0
	for i, c := range s {
		switch c {
		case '(':
			depth++
		case ')':
			depth--
		case ',':
			if depth == 0 {
				out = append(out, s[start:i])
				start = i + 1
			}
		}
	}
	return append(out, s[start:])
}

func parseRequirement(t string) (Requirement, error) {
	if k, ok := strings.CutPrefix(t, "!"); ok {
		k = strings.TrimSpace(k)
		if err := checkKey(k); err != nil {
			return Requirement{}, err
		}
		return Requirement{Key: k, Op: OpDoesNotExist}, nil
	}
	if i := strings.IndexAny(t, "=!<>"); i >= 0 {
		k := strings.TrimSpace(t[:i])
		rest := t[i:]
		var op Operator
		switch {
		case strings.HasPrefix(rest, "=="):
			op, rest = OpEquals, rest[2:]
		case strings.HasPrefix(rest, "!="):
			op, rest = OpNotEquals, rest[2:]
		case strings.HasPrefix(rest, "="):
			op, rest = OpEquals, rest[1:]
		default:
			return Requirement{}, fmt.Errorf("operator %q is not supported", strings.TrimRight(rest[:min(2, len(rest))], " "))
		}
		if err := checkKey(k); err != nil {
			return Requirement{}, err
		}
		v := strings.TrimSpace(rest)
		if err := checkValue(v); err != nil {
			return Requirement{}, err
		}
		return Requirement{Key: k, Op: op, Values: []string{v}}, nil
	}
	fields := strings.Fields(t)
	if len(fields) == 1 {
		if err := checkKey(fields[0]); err != nil {
			return Requirement{}, err
		}
		return Requirement{Key: fields[0], Op: OpExists}, nil
	}
	k := fields[0]
	rest := strings.TrimSpace(strings.TrimPrefix(t, k))
	var op Operator
	switch {
	case strings.HasPrefix(rest, "notin"):
		op, rest = OpNotIn, rest[len("notin"):]
	case strings.HasPrefix(rest, "in"):
		op, rest = OpIn, rest[len("in"):]
	default:
		return Requirement{}, fmt.Errorf("want an operator after %q", k)
	}
	if err := checkKey(k); err != nil {
		return Requirement{}, err
	}
	rest = strings.TrimSpace(rest)
	if !strings.HasPrefix(rest, "(") || !strings.HasSuffix(rest, ")") {
		return Requirement{}, fmt.Errorf("%s wants a parenthesized list: %s %s (a,b)", op, k, op)
	}
	var vals []string
	for _, v := range strings.Split(rest[1:len(rest)-1], ",") {
		v = strings.TrimSpace(v)
		if err := checkValue(v); err != nil {
			return Requirement{}, err
		}
		vals = append(vals, v)
	}
	if len(vals) == 1 && vals[0] == "" {
		return Requirement{}, fmt.Errorf("%s with an empty list", op)
	}
	return Requirement{Key: k, Op: op, Values: vals}, nil
}

func checkKey(k string) error {
	if k == "" {
		return fmt.Errorf("empty label key")
	}
	if len(k) > 253 {
		return fmt.Errorf("label key longer than 253 bytes")
	}
	for _, c := range k {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune("._-/", c)) {
			return fmt.Errorf("character %q is not allowed in a label key ([A-Za-z0-9._/-])", c)
		}
	}
	return nil
}

func checkValue(v string) error {
	if len(v) > 253 {
		return fmt.Errorf("label value longer than 253 bytes")
	}
	for _, c := range v {
		if strings.ContainsRune("()=!,<> \t", c) {
			return fmt.Errorf("character %q is not allowed in a label value", c)
		}
	}
	return nil
}
