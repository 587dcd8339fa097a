// Package config owns the agent's YAML config file (default
// /etc/tether/agent.yaml): its schema, strict decoding (unknown fields are
// errors), validation, and the rule that a file anyone but its owner can
// write is refused, since it decides which commands the agent runs.
//
// It only reads and checks the file. Precedence between flags, environment
// and file is the main's business, and the values become agent.Config there.
package config
