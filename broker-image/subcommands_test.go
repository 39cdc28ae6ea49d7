package main

import (
	"bytes"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	pahov3 "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/crypto/bcrypt"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
	"github.com/mqtt-operator/mqtt-operator/test/secretscan"
)

// The subcommands run as a user runs them: the test binary re-executes
// itself as the broker binary with the subcommand as its first argument.

const (
	chosenPassword    = "a person chose this passphrase"
	generatedPassword = "Zq0cd3ZQ0yKc0O2Vb8pD2Rj6Xo4Lk7Wm" // 32 characters, as the operator generates
	carolPassword     = "carol's own passphrase"
)

var commandSecrets = map[string]string{
	"the chosen password": chosenPassword, "the generated password": generatedPassword, "carol's password": carolPassword,
}

type commandResult struct {
	stdout, stderr string
	code           int
}

// runCommand runs `broker ARGS...` with stdin and extra environment, and
// checks no password is in what it printed.
func runCommand(t *testing.T, stdin string, env []string, args ...string) commandResult {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(exe, args...)
	cmd.Env = append(append(os.Environ(), runAsBroker+"=1"), env...)
	cmd.Stdin = strings.NewReader(stdin)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err = cmd.Run()
	code := 0
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	r := commandResult{stdout: stdout.String(), stderr: stderr.String(), code: code}
	secretscan.Absent(t, "broker "+strings.Join(args, " ")+" output", r.stdout+r.stderr, commandSecrets)
	return r
}

func TestHashPasswordSubcommand(t *testing.T) {
	r := runCommand(t, chosenPassword+"\n", nil, "hash-password")
	hash := strings.TrimSpace(r.stdout)
	if r.code != 0 || strings.Count(r.stdout, "\n") != 1 {
		t.Fatalf("bcrypt: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if cost, err := bcrypt.Cost([]byte(hash)); err != nil || cost != passwordhash.BcryptCost {
		t.Errorf("bcrypt hash %q: cost %d (%v), want %d", hash, cost, err, passwordhash.BcryptCost)
	}
	if ok, err := passwordhash.Verify(hash, chosenPassword); !ok || err != nil {
		t.Errorf("the printed bcrypt hash does not verify the password (the line ending must not be part of it): %v", err)
	}

	r = runCommand(t, generatedPassword, nil, "hash-password", "--format", "sha256")
	hash = strings.TrimSpace(r.stdout)
	if r.code != 0 || !strings.HasPrefix(hash, "$sha256$") {
		t.Fatalf("sha256: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	if ok, err := passwordhash.Verify(hash, generatedPassword); !ok || err != nil {
		t.Errorf("the printed sha256 hash does not verify the password: %v", err)
	}
	if again := strings.TrimSpace(runCommand(t, generatedPassword, nil, "hash-password", "--format", "generated").stdout); again == hash || !strings.HasPrefix(again, "$sha256$") {
		t.Errorf("--format generated gave %q: want a sha256 hash with its own random salt", again)
	}

	for name, tc := range map[string]struct {
		stdin string
		args  []string
		want  string
	}{
		"password as an argument": {"", []string{"hash-password", chosenPassword}, "takes no arguments: the password is read from stdin"},
		"short generated":         {chosenPassword, []string{"hash-password", "--format", "sha256"}, "generated passwords must be at least 32 characters (use bcrypt"},
		"too long for bcrypt":     {strings.Repeat("x", 73), []string{"hash-password"}, "password is 73 bytes; at most 72"},
		"two lines":               {chosenPassword + "\n" + carolPassword + "\n", []string{"hash-password"}, "stdin holds more than one line"},
		"nothing":                 {"", []string{"hash-password"}, "no password on stdin"},
		"empty line":              {"\n", []string{"hash-password"}, "stdin holds an empty password"},
		"unknown format":          {chosenPassword, []string{"hash-password", "--format", "md5"}, "unknown hash format: want bcrypt or sha256"},
		"unknown subcommand":      {"", []string{"hash"}, `unknown subcommand "hash"`},
	} {
		r := runCommand(t, tc.stdin, nil, tc.args...)
		if r.code == 0 || r.stdout != "" || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, stdout %q, stderr %q; want a failure saying %q", name, r.code, r.stdout, r.stderr, tc.want)
		}
	}
}

// usersFile writes a users file and alice's password file into dir.
func usersFile(t *testing.T, dir, carolHash string) string {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, "alice.password"), []byte(chosenPassword+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "users.yaml")
	spec := `users:
  - username: alice
    passwordFile: alice.password
  - username: svc
    passwordEnv: SVC_PASSWORD
    hashFormat: sha256
  - username: carol
    passwordHash: "` + carolHash + `"
acls:
  - name: devices
    subjects: {allAuthenticated: true}
    rules:
      - {topic: "devices/%u/#", access: Publish, effect: Allow}
  - name: service-reads-all
    subjects: {users: [svc]}
    rules:
      - {topic: "devices/#", access: Subscribe, effect: Allow}
`
	if err := os.WriteFile(path, []byte(spec), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// The README's walk-through: hash a password, write users.yaml, build the
// bundle, start a broker on a minimal broker.yaml and that bundle, and log
// in with real clients.
func TestBundleSubcommandEndToEnd(t *testing.T) {
	dir := t.TempDir()
	carolHash := strings.TrimSpace(runCommand(t, carolPassword, nil, "hash-password").stdout)
	users := usersFile(t, dir, carolHash)
	bundlePath := filepath.Join(dir, "auth.json")
	env := []string{"SVC_PASSWORD=" + generatedPassword}
	r := runCommand(t, "", env, "bundle", "--users", users, "--out", bundlePath)
	if r.code != 0 || !strings.Contains(r.stdout, "wrote "+bundlePath+": revision ") || !strings.Contains(r.stdout, "3 users, 2 ACLs") {
		t.Fatalf("bundle: exit %d, stdout %q, stderr %q", r.code, r.stdout, r.stderr)
	}
	first, err := os.ReadFile(bundlePath)
	if err != nil {
		t.Fatal(err)
	}
	if info, _ := os.Stat(bundlePath); info.Mode().Perm() != 0o600 {
		t.Errorf("bundle file mode %v, want 0600", info.Mode().Perm())
	}
	bundle, err := brokerconfig.ParseBundle(first)
	if err != nil {
		t.Fatalf("the broker's parser refuses the built bundle: %v", err)
	}
	for _, u := range bundle.Users {
		if u.Username == "svc" && !strings.HasPrefix(u.PasswordHash, "$sha256$") || u.Username == "alice" && !passwordhash.IsSlow(u.PasswordHash) {
			t.Errorf("user %s has hash format %.8s", u.Username, u.PasswordHash)
		}
	}
	// Rebuilding an unchanged users file changes nothing: same hashes,
	// revision and generation, so a watching broker disconnects no one.
	if r := runCommand(t, "", env, "bundle", "--users", users, "--out", bundlePath); r.code != 0 {
		t.Fatalf("rebuild: %q", r.stderr)
	}
	if again, _ := os.ReadFile(bundlePath); !bytes.Equal(again, first) {
		t.Errorf("rebuilding an unchanged users file changed the bundle:\n%s\n%s", first, again)
	}

	mqttAddr, health := freeAddr(t), freeAddr(t)
	config := filepath.Join(dir, "broker.yaml")
	minimal := "version: " + brokerconfig.Version + "\nlisteners: [{name: mqtt, protocol: tcp, address: \"" + mqttAddr +
		"\"}]\nhealthAddress: \"" + health + "\"\nstorage: {path: " + dir + "}\n"
	if err := os.WriteFile(config, []byte(minimal), 0o600); err != nil {
		t.Fatal(err)
	}
	p := startProcess(t, "--config", config, "--auth-bundle", bundlePath, "--admin-token-file", filepath.Join(dir, "no-token"))
	waitFor(t, "broker ready", func() bool { return httpStatus(health, "/readyz") == http.StatusOK })
	t.Cleanup(func() {
		secretscan.Absent(t, "broker's output", p.output(), commandSecrets)
	})

	received := make(chan string, 10)
	svc := mustConnect(t, mqttAddr, "svc", generatedPassword, "svc", true)
	if tok := svc.Subscribe("devices/#", 1, func(_ pahov3.Client, m pahov3.Message) { received <- string(m.Payload()) }); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("svc subscribe: %v", tok.Error())
	}
	alice := mustConnect(t, mqttAddr, "alice", chosenPassword, "alice", true)
	if tok := alice.Publish("devices/alice/temp", 1, false, "21.5"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("alice publish: %v", tok.Error())
	}
	carol := mustConnect(t, mqttAddr, "carol", carolPassword, "carol", true)
	if tok := carol.Publish("devices/carol/temp", 1, false, "19.0"); !tok.WaitTimeout(5*time.Second) || tok.Error() != nil {
		t.Fatalf("carol publish: %v", tok.Error())
	}
	// mosquitto_pub, as the README shows it.
	if pub, err := exec.LookPath("mosquitto_pub"); err == nil {
		host, port, _ := strings.Cut(mqttAddr, ":")
		out, err := exec.Command(pub, "-h", host, "-p", port, "-u", "alice", "-P", chosenPassword, "-q", "1",
			"-t", "devices/alice/door", "-m", "open").CombinedOutput()
		if err != nil {
			t.Fatalf("mosquitto_pub: %v: %s", err, out)
		}
	} else {
		t.Log("mosquitto_pub not installed; publishing with paho only")
		alice.Publish("devices/alice/door", 1, false, "open").Wait()
	}
	want := map[string]bool{"21.5": true, "19.0": true, "open": true}
	for len(want) > 0 {
		select {
		case m := <-received:
			delete(want, m)
		case <-time.After(5 * time.Second):
			t.Fatalf("svc never received %v", want)
		}
	}
	if _, err := connect(mqttAddr, "alice", carolPassword, "alice-wrong", true); err == nil {
		t.Error("alice logged in with carol's password")
	}
}

// The subcommand refuses what the broker would refuse, saying which user or
// ACL and what is wrong, and never repeats a password.
func TestBundleSubcommandRefusals(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	write("two-lines", chosenPassword+"\n"+carolPassword+"\n")
	for name, tc := range map[string]struct{ spec, want string }{
		"inline password":  {"users: [{username: alice, password: '" + chosenPassword + "'}]", "users[0] (alice): password: a plain password does not go in the users file"},
		"missing file":     {"users: [{username: alice, passwordFile: nope}]", "users[0] (alice): passwordFile: open " + filepath.Join(dir, "nope")},
		"unset variable":   {"users: [{username: alice, passwordEnv: NOT_SET_ANYWHERE}]", "users[0] (alice): passwordEnv: environment variable NOT_SET_ANYWHERE is not set or empty"},
		"two sources":      {"users: [{username: alice, passwordEnv: X, passwordFile: y}]", "users[0] (alice): needs exactly one of passwordFile, passwordEnv, passwordHash and certificateSHA256"},
		"no source":        {"users: [{username: alice}]", "users[0] (alice): needs exactly one of"},
		"bad format":       {"users: [{username: alice, passwordFile: two-lines, hashFormat: md5}]", `users[0] (alice): hashFormat "md5": want bcrypt (chosen) or sha256 (generated)`},
		"multi-line file":  {"users: [{username: alice, passwordFile: two-lines}]", "holds more than one line"},
		"bad hash":         {"users: [{username: alice, passwordHash: 'plain'}]", "users[0] (alice): unknown password hash format"},
		"bad username":     {"users: [{username: 'a/b', passwordHash: '" + fixedSHA256Hash + "'}]", `users[0]: username "a/b" contains '/'`},
		"typo":             {"users: [{username: alice, passwdFile: x}]", `unknown field "passwdFile"`},
		"bad access":       {"acls: [{name: x, subjects: {allAuthenticated: true}, rules: [{topic: a, access: Read, effect: Allow}]}]", `acls[0] (x) rules[0]: unknown access "Read"`},
		"bad fingerprint":  {"users: [{username: sensor, certificateSHA256: [ABC]}]", `users[0] (sensor): certificate fingerprint "ABC" is not 64 lowercase hex digits`},
		"acl without rule": {"acls: [{name: x, subjects: {allAuthenticated: true}}]", "acls[0] (x): no rules"},
	} {
		users := write("users.yaml", tc.spec)
		out := filepath.Join(dir, "auth.json")
		r := runCommand(t, "", nil, "bundle", "--users", users, "--out", out)
		if r.code == 0 || !strings.Contains(r.stderr, tc.want) {
			t.Errorf("%s: exit %d, stderr %q; want a failure saying %q", name, r.code, r.stderr, tc.want)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: a bundle was written", name)
		}
	}
}

const fixedSHA256Hash = "$sha256$MDEyMzQ1Njc4OWFiY2RlZg$ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGk"

// A bundle the broker refuses is refused with what is wrong: a revision
// that does not match says both revisions.
func TestBrokerSaysWhatIsWrongWithABundle(t *testing.T) {
	f := newBrokerFiles(t)
	f.writeConfig(t)
	b := f.authBundle()
	data, err := brokerconfig.MarshalBundle(b)
	if err != nil {
		t.Fatal(err)
	}
	tampered := bytes.Replace(data, []byte(`"revision":"`+b.Revision+`"`), []byte(`"revision":"0123456789abcdef"`), 1)
	f.swapIn(t, f.bundle, tampered)
	p := startProcess(t, "--config", f.config, "--auth-bundle", f.bundle, "--admin-token-file", f.token)
	want := `auth bundle revision mismatch: file says \"0123456789abcdef\", content hashes to \"` + b.Revision + `\"`
	waitFor(t, "the refusal in the log", func() bool { return len(logLines(p.output(), want)) > 0 })
}
