package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
)

// bundleSpec is what a person writes: users with where their password is
// (never the password itself) and the ACLs, as in the bundle.
type bundleSpec struct {
	// Generation, when set, is the bundle's generation; otherwise the
	// command picks one above the file it replaces.
	Generation int64              `json:"generation,omitempty"`
	Users      []userSpec         `json:"users"`
	ACLs       []brokerconfig.ACL `json:"acls"`
}

// userSpec is one user: exactly one of PasswordFile, PasswordEnv,
// PasswordHash and CertificateSHA256.
type userSpec struct {
	Username string `json:"username"`
	// PasswordFile is a file holding the password on one line, relative to
	// the users file.
	PasswordFile string `json:"passwordFile,omitempty"`
	// PasswordEnv names an environment variable holding the password.
	PasswordEnv string `json:"passwordEnv,omitempty"`
	// HashFormat is how a password from PasswordFile or PasswordEnv is
	// hashed: bcrypt (the default; also "chosen") or sha256 ("generated").
	HashFormat string `json:"hashFormat,omitempty"`
	// PasswordHash is a hash made before, by `broker hash-password`, the
	// operator, or htpasswd -B.
	PasswordHash      string   `json:"passwordHash,omitempty"`
	CertificateSHA256 []string `json:"certificateSHA256,omitempty"`
	// Password is refused: it is here to say so, not as an unknown field.
	Password string `json:"password,omitempty"`
}

func bundleCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker bundle", flag.ContinueOnError)
	fs.SetOutput(stderr)
	in := fs.String("users", "", "YAML or JSON file of users and ACLs (- for stdin); see broker-image/README.md")
	out := fs.String("out", brokerconfig.BundleFileName, "the bundle file to write (- for stdout); the broker reads it with --auth-bundle")
	generation := fs.Int64("generation", 0, "the bundle's generation; default: the users file's, else one above the bundle being replaced and at least the Unix time")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: broker bundle --users users.yaml [--out auth.json]\n\n"+
			"Builds and seals an auth bundle: hashes the users' passwords (read from files or\n"+
			"environment variables, never from the users file), checks everything the broker\n"+
			"checks, and writes the file the broker reads. A user whose password still matches\n"+
			"its hash in the bundle being replaced keeps that hash, so rebuilding an unchanged\n"+
			"file changes nothing and disconnects no one.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 || *in == "" {
		return errors.New("usage: broker bundle --users users.yaml [--out auth.json]")
	}
	var data []byte
	var err error
	dir := "."
	if *in == "-" {
		data, err = io.ReadAll(io.LimitReader(stdin, 64<<20))
	} else {
		data, err = os.ReadFile(*in)
		dir = filepath.Dir(*in)
	}
	if err != nil {
		return fmt.Errorf("reading users: %w", err)
	}
	var spec bundleSpec
	if err := yaml.UnmarshalStrict(data, &spec); err != nil {
		return fmt.Errorf("parsing %s: %w", *in, err)
	}
	var previous *brokerconfig.AuthBundle
	if *out != "-" {
		if old, err := os.ReadFile(*out); err == nil {
			previous, _ = brokerconfig.ParseBundle(old) // an invalid one is replaced whole
		}
	}
	bundle, err := buildBundle(&spec, dir, os.Getenv, previous)
	if err != nil {
		return err
	}
	switch {
	case *generation != 0:
		bundle.Generation = *generation
	case spec.Generation != 0:
		bundle.Generation = spec.Generation
	case previous != nil && previous.Revision == bundle.Revision:
		bundle.Generation = previous.Generation // nothing changed: the same file
	case previous != nil:
		bundle.Generation = max(previous.Generation+1, time.Now().Unix())
	default:
		// Above any bundle a broker may have cached from an earlier file.
		bundle.Generation = time.Now().Unix()
	}
	rendered, err := brokerconfig.MarshalBundleCompressed(bundle)
	if err != nil {
		return err
	}
	summary := fmt.Sprintf("revision %s, generation %d, %d users, %d ACLs", bundle.Revision, bundle.Generation, len(bundle.Users), len(bundle.ACLs))
	if *out == "-" {
		if _, err := stdout.Write(append(rendered, '\n')); err != nil {
			return err
		}
		fmt.Fprintln(stderr, summary)
		return nil
	}
	if err := writeAtomically(*out, rendered); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %s\n", *out, summary)
	return nil
}

// buildBundle turns a spec into a sealed, valid bundle. A password user
// whose password matches its hash in previous keeps that hash.
func buildBundle(spec *bundleSpec, dir string, getenv func(string) string, previous *brokerconfig.AuthBundle) (*brokerconfig.AuthBundle, error) {
	oldHash := map[string]string{}
	if previous != nil {
		for _, u := range previous.Users {
			oldHash[u.Username] = u.PasswordHash
		}
	}
	var errs []error
	b := &brokerconfig.AuthBundle{ACLs: spec.ACLs}
	for i, us := range spec.Users {
		u, err := buildUser(us, dir, getenv, oldHash[us.Username])
		if err != nil {
			errs = append(errs, fmt.Errorf("users[%d] (%s): %w", i, us.Username, err))
			continue
		}
		b.Users = append(b.Users, u)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	if b.ACLs == nil {
		b.ACLs = []brokerconfig.ACL{}
	}
	b.Seal()
	if err := b.Validate(); err != nil {
		return nil, fmt.Errorf("invalid auth bundle: %w", err)
	}
	return b, nil
}

func buildUser(us userSpec, dir string, getenv func(string) string, oldHash string) (brokerconfig.User, error) {
	u := brokerconfig.User{Username: us.Username, PasswordHash: us.PasswordHash, CertificateSHA256: us.CertificateSHA256}
	if us.Password != "" {
		return u, errors.New("password: a plain password does not go in the users file; use passwordFile, passwordEnv or passwordHash (broker hash-password)")
	}
	sources := 0
	for _, set := range []bool{us.PasswordFile != "", us.PasswordEnv != "", us.PasswordHash != "", len(us.CertificateSHA256) > 0} {
		if set {
			sources++
		}
	}
	if sources != 1 {
		return u, errors.New("needs exactly one of passwordFile, passwordEnv, passwordHash and certificateSHA256")
	}
	format := canonicalFormat(us.HashFormat)
	if format == "" {
		format = formatBcrypt
	}
	if format != formatBcrypt && format != formatSHA256 {
		return u, fmt.Errorf("hashFormat %q: want %s (chosen) or %s (generated)", us.HashFormat, formatBcrypt, formatSHA256)
	}
	var password string
	switch {
	case us.PasswordFile != "":
		path := us.PasswordFile
		if !filepath.IsAbs(path) {
			path = filepath.Join(dir, path)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return u, fmt.Errorf("passwordFile: %w", err)
		}
		if password, err = oneLine(data, "passwordFile "+path); err != nil {
			return u, err
		}
	case us.PasswordEnv != "":
		value := getenv(us.PasswordEnv)
		if value == "" {
			return u, fmt.Errorf("passwordEnv: environment variable %s is not set or empty", us.PasswordEnv)
		}
		var err error
		if password, err = oneLine([]byte(value), "environment variable "+us.PasswordEnv); err != nil {
			return u, err
		}
	default:
		if us.HashFormat != "" {
			return u, errors.New("hashFormat applies only to passwordFile and passwordEnv")
		}
		return u, nil
	}
	if oldHash != "" && passwordhash.IsSlow(oldHash) == (format == formatBcrypt) {
		if ok, err := passwordhash.Verify(oldHash, password); err == nil && ok {
			u.PasswordHash = oldHash
			return u, nil
		}
	}
	hash, err := hashPassword(format, password)
	if err != nil {
		return u, err
	}
	u.PasswordHash = hash
	return u, nil
}

// writeAtomically replaces path with data in one rename, so the broker
// watching it never reads half a file. Mode 0600: password hashes.
func writeAtomically(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename there is nothing to remove
	if _, err := tmp.Write(data); err != nil {
		_ = tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}
