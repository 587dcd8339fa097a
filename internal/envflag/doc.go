// Package envflag owns how the binaries read flags from the environment:
// every flag NAME of a flag.FlagSet can also be set with PREFIX_NAME
// (upper case, dashes as underscores), and a flag given on the command line
// always wins over its variable.
//
// It parses and applies values only; where defaults or config files come in
// is the caller's business (a main can tell what was set with FlagSet.Visit).
package envflag
