package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os/user"
	"strings"
	"time"

	"github.com/tetherhq/tether/internal/envflag"
	"github.com/tetherhq/tether/server"
	"github.com/tetherhq/tether/server/access"
	"github.com/tetherhq/tether/server/registry"
	"github.com/tetherhq/tether/server/registry/redisstore"
)

// secretFlags are the secret-file flags of the server.
type secretFlags struct {
	tokenSecretFile, apiKeysFile, apiKeys, clusterSecretFile string
}

// loadSecrets reads the secret files named by flags into sec. A bare file
// name is looked up in $CREDENTIALS_DIRECTORY (systemd LoadCredential=);
// so are --tls-cert and --tls-key. A group/world-writable secret file, or
// one file for two secrets, is refused; the returned warnings (a
// world-readable file) are logged by the caller.
func loadSecrets(sec *server.Security, f secretFlags) (warnings []string, err error) {
	sec.TLSCert = access.ResolveSecretPath(sec.TLSCert)
	sec.TLSKey = access.ResolveSecretPath(sec.TLSKey)
	f.tokenSecretFile = access.ResolveSecretPath(f.tokenSecretFile)
	f.clusterSecretFile = access.ResolveSecretPath(f.clusterSecretFile)
	f.apiKeysFile = access.ResolveSecretPath(f.apiKeysFile)
	files := []access.SecretFile{
		{What: "--token-secret-file", Path: f.tokenSecretFile},
		{What: "--cluster-secret-file", Path: f.clusterSecretFile},
		{What: "--api-keys-file", Path: f.apiKeysFile},
		{What: "--tls-key", Path: sec.TLSKey},
	}
	if err := access.CheckDistinctSecrets(files...); err != nil {
		return nil, err
	}
	for _, sf := range files {
		if sf.Path == "" {
			continue
		}
		w, err := access.CheckSecretFile(sf.Path, sf.What)
		if err != nil {
			return nil, err
		}
		if w != "" {
			warnings = append(warnings, w)
		}
	}
	if f.tokenSecretFile != "" {
		if sec.TokenSecret, err = access.LoadSecret(f.tokenSecretFile, "token secret"); err != nil {
			return nil, err
		}
	}
	if f.clusterSecretFile != "" {
		if sec.ClusterSecret, err = access.LoadSecret(f.clusterSecretFile, "cluster secret"); err != nil {
			return nil, err
		}
	}
	switch {
	case f.apiKeysFile != "" && f.apiKeys != "":
		return nil, errors.New("give API keys with --api-keys-file or --api-keys (TETHER_API_KEYS), not both")
	case f.apiKeysFile != "":
		sec.APIKeys, err = access.LoadAPIKeys(f.apiKeysFile)
	case f.apiKeys != "":
		sec.APIKeys, err = access.ParseAPIKeys([]byte(f.apiKeys))
		if err != nil {
			err = fmt.Errorf("--api-keys / TETHER_API_KEYS: %w", err)
		}
	}
	return warnings, err
}

// parseWithArgs parses flags that may come before or after the positional
// arguments ("token issue dev-1 --ttl 24h").
func parseWithArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := envflag.Parse(fs, "TETHER", args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

const tokenUsage = `Usage:
  tether-server token issue <device-id> [--ttl 8760h] --token-secret-file F
      prints a device token on stdout (its id and expiry on stderr)
  tether-server token revoke <token|token-id> [--until RFC3339] --redis URL
      adds the token id to the deny list in the shared Redis registry; live
      sessions with the token end within a second (Close AUTH_REVOKED)
`

func tokenCommand(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, tokenUsage)
		return errors.New("token: want issue or revoke")
	}
	fs := flag.NewFlagSet("tether-server token "+args[0], flag.ContinueOnError)
	fs.Usage = func() { fmt.Fprint(fs.Output(), tokenUsage); fs.PrintDefaults() }
	switch args[0] {
	case "issue":
		ttl := fs.Duration("ttl", 8760*time.Hour, "how long the token is valid")
		secretFile := fs.String("token-secret-file", "", "the server's token secret (required)")
		pos, err := parseWithArgs(fs, args[1:])
		if err != nil {
			return ignoreHelp(err)
		}
		if len(pos) != 1 {
			return errors.New("token issue: want exactly one device id")
		}
		if err := envflag.Positive(fs, "ttl"); err != nil {
			return fmt.Errorf("token issue: %w", err)
		}
		if *secretFile == "" {
			return errors.New("token issue: --token-secret-file is required")
		}
		secret, err := access.LoadSecret(*secretFile, "token secret")
		if err != nil {
			return err
		}
		signer, err := access.NewSigner(secret)
		if err != nil {
			return err
		}
		tok, t, err := signer.Issue(pos[0], *ttl, time.Now())
		if err != nil {
			return fmt.Errorf("token issue: %w", err)
		}
		fmt.Fprintln(stdout, tok)
		fmt.Fprintf(stderr, "device %s, token id %s, expires %s\n", t.DeviceID, t.ID, t.Expiry.UTC().Format(time.RFC3339))
		cliAudit(stderr, "token_issue", "device", t.DeviceID, "token_id", t.ID, "expires", t.Expiry.UTC().Format(time.RFC3339))
		return nil
	case "revoke":
		redisURL := fs.String("redis", "", "Redis URL of the cluster's registry (required; the in-memory store lives inside the server process)")
		until := fs.String("until", "", "keep the id denied until this time (RFC 3339; default: the token's expiry, or 10 years for a bare id)")
		pos, err := parseWithArgs(fs, args[1:])
		if err != nil {
			return ignoreHelp(err)
		}
		if len(pos) != 1 {
			return errors.New("token revoke: want exactly one token or token id")
		}
		id, exp := pos[0], time.Now().Add(10*365*24*time.Hour)
		if strings.Contains(id, ".") {
			t, err := access.ParseToken(id)
			if err != nil {
				return fmt.Errorf("token revoke: %w", err)
			}
			id, exp = t.ID, t.Expiry
		}
		if *until != "" {
			if exp, err = time.Parse(time.RFC3339, *until); err != nil {
				return fmt.Errorf("token revoke: --until: %w", err)
			}
		}
		if *redisURL == "" {
			return errors.New("token revoke: --redis is required (for a server with the in-memory store use grpcurl and tether.v1.AdminService/RevokeToken with an admin key; see docs/SECURITY.md)")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		st, err := redisstore.New(ctx, redisstore.Options{URL: *redisURL})
		if err != nil {
			return err
		}
		defer st.Close()
		var rev registry.Revocations = st
		if err := rev.Revoke(ctx, id, exp); err != nil {
			return err
		}
		fmt.Fprintf(stderr, "token %s revoked until %s\n", id, exp.UTC().Format(time.RFC3339))
		cliAudit(stderr, "token_revoke", "token_id", id, "until", exp.UTC().Format(time.RFC3339))
		return nil
	}
	fmt.Fprint(stderr, tokenUsage)
	return fmt.Errorf("token: unknown subcommand %q", args[0])
}

// cliAudit writes the audit line of a state-changing CLI command (the same
// "audit" message as the server's, docs/ADMIN.md) to w.
func cliAudit(w io.Writer, action string, attrs ...any) {
	who := "unknown"
	if u, err := user.Current(); err == nil {
		who = u.Username
	}
	slog.New(slog.NewTextHandler(w, nil)).Info("audit", append([]any{"action", action, "caller", "cli:" + who}, attrs...)...)
}

func ignoreHelp(err error) error {
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	return err
}

// apikeyCommand: `apikey hash` reads a key on stdin and prints its key-file
// line, so the plain key never needs to touch the server's disk.
func apikeyCommand(args []string, stdin io.Reader, stdout io.Writer) error {
	if len(args) == 0 || args[0] != "hash" {
		return errors.New("usage: tether-server apikey hash [--role operator] [--name NAME] < key")
	}
	fs := flag.NewFlagSet("tether-server apikey hash", flag.ContinueOnError)
	roleName := fs.String("role", "viewer", "viewer, operator or admin")
	name := fs.String("name", "", "a name for logs and errors (default: the first 8 hex digits of the hash)")
	if _, err := parseWithArgs(fs, args[1:]); err != nil {
		return ignoreHelp(err)
	}
	role, err := access.ParseRole(*roleName)
	if err != nil {
		return err
	}
	if strings.ContainsAny(*name, ";\n") {
		return errors.New("--name may not contain ';' or a newline")
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	key := strings.TrimSpace(line)
	if len(key) < 16 {
		return errors.New("apikey hash: the key on stdin is shorter than 16 characters (e.g. openssl rand -hex 32)")
	}
	out := access.HashLine(key, role, *name)
	if *name == "" {
		out = strings.TrimSuffix(out, " ")
	}
	fmt.Fprintln(stdout, out)
	return nil
}
