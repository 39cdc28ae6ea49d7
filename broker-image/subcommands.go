package main

import (
	"bytes"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"golang.org/x/term"

	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
)

// A subcommand is the first argument when it is not a flag; without one the
// binary is the broker, with the flags it always had.
type subcommand struct {
	summary string
	run     func(args []string, stdin io.Reader, stdout, stderr io.Writer) error
}

var subcommands = map[string]subcommand{
	"hash-password": {"print the hash of a password read from stdin or a prompt", hashPasswordCommand},
	"bundle":        {"build and seal an auth bundle from a YAML or JSON file of users and ACLs", bundleCommand},
}

// isSubcommand reports whether args (without the program name) start with a
// subcommand rather than the broker's flags.
func isSubcommand(args []string) bool {
	return len(args) > 0 && !strings.HasPrefix(args[0], "-")
}

// runSubcommand runs `broker NAME ARGS...` and returns the exit status.
func runSubcommand(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	name := args[0]
	cmd, ok := subcommands[name]
	if name == "help" || !ok {
		if !ok && name != "help" {
			fmt.Fprintf(stderr, "broker: unknown subcommand %q\n\n", name)
		}
		fmt.Fprint(stderr, "Usage:\n  broker [flags]                 run the broker (broker --help lists the flags)\n")
		for _, n := range []string{"hash-password", "bundle"} {
			fmt.Fprintf(stderr, "  broker %-23s %s\n", n+" [flags]", subcommands[n].summary)
		}
		if name == "help" {
			return 0
		}
		return 2
	}
	if err := cmd.run(args[1:], stdin, stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "broker %s: %v\n", name, err)
		return 1
	}
	return 0
}

// Hash formats, as the operator chooses them (package passwordhash).
const (
	formatBcrypt = "bcrypt" // a password a person chose
	formatSHA256 = "sha256" // a generated password of at least 32 random characters
)

func hashPasswordCommand(args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("broker hash-password", flag.ContinueOnError)
	fs.SetOutput(stderr)
	format := fs.String("format", formatBcrypt, "bcrypt (or chosen): for a password a person chose (cost 10, at most 72 bytes; slow to attack offline). "+
		"sha256 (or generated): for a generated password of at least 32 random characters (salted SHA-256; fast to check)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), "Usage: broker hash-password [--format bcrypt|sha256] < password-file\n\n"+
			"Reads one password from stdin (or asks for it twice on a terminal) and prints its hash\n"+
			"for the passwordHash field of an auth bundle. The password is never an argument.\n\n")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return errors.New("takes no arguments: the password is read from stdin or a prompt, never from the command line, " +
			"where other users of the machine and the shell history would see it")
	}
	password, err := readPassword(stdin, stderr)
	if err != nil {
		return err
	}
	hash, err := hashPassword(*format, password)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(stdout, hash)
	return err
}

// hashPassword hashes in the named format. Its errors never contain the
// password.
func hashPassword(format, password string) (string, error) {
	switch canonicalFormat(format) {
	case formatBcrypt:
		return passwordhash.HashChosen(password)
	case formatSHA256:
		salt := make([]byte, 16)
		if _, err := rand.Read(salt); err != nil {
			return "", fmt.Errorf("making a salt: %w", err)
		}
		hash, err := passwordhash.HashGenerated(password, salt)
		if err != nil {
			return "", fmt.Errorf("%w (use bcrypt for a password a person chose)", err)
		}
		return hash, nil
	}
	return "", fmt.Errorf("unknown hash format: want %s or %s", formatBcrypt, formatSHA256)
}

// canonicalFormat accepts the formats also by what they are for, as
// package passwordhash names them: chosen (bcrypt) and generated (sha256).
func canonicalFormat(format string) string {
	switch format {
	case "chosen":
		return formatBcrypt
	case "generated":
		return formatSHA256
	}
	return format
}

// maxPasswordBytes bounds what is read as one password.
const maxPasswordBytes = 4096

// readPassword asks for the password twice on a terminal, without echo, or
// reads it from stdin.
func readPassword(stdin io.Reader, prompt io.Writer) (string, error) {
	if f, ok := stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(prompt, "Password: ")
		first, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprint(prompt, "\nAgain: ")
		if err == nil {
			var again []byte
			again, err = term.ReadPassword(int(f.Fd()))
			if err == nil && !bytes.Equal(first, again) {
				err = errors.New("the two passwords differ")
			}
		}
		fmt.Fprintln(prompt)
		if err != nil {
			return "", fmt.Errorf("reading the password: %w", err)
		}
		return oneLine(first, "the password")
	}
	data, err := io.ReadAll(io.LimitReader(stdin, maxPasswordBytes+3))
	if err != nil {
		return "", fmt.Errorf("reading the password from stdin: %w", err)
	}
	if len(data) == 0 {
		return "", errors.New(`no password on stdin: pipe it in, for example printf '%s' "$PASSWORD" | broker hash-password`)
	}
	return oneLine(data, "stdin")
}

// oneLine is the password in data: one line, its line ending (if any)
// removed. More lines are an error rather than a silent truncation (the
// wrong file, a key or a certificate, would otherwise hash its first line).
func oneLine(data []byte, what string) (string, error) {
	s := strings.TrimSuffix(strings.TrimSuffix(string(data), "\n"), "\r")
	switch {
	case len(s) > maxPasswordBytes:
		return "", fmt.Errorf("%s holds more than %d bytes; a password is one line", what, maxPasswordBytes)
	case strings.ContainsAny(s, "\r\n"):
		return "", fmt.Errorf("%s holds more than one line; a password is one line", what)
	case s == "":
		return "", fmt.Errorf("%s holds an empty password", what)
	}
	return s, nil
}
