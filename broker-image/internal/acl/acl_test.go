package acl

import (
	"flag"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

func rules(rs ...string) []brokerconfig.Rule {
	var out []brokerconfig.Rule
	for _, r := range rs { // "Allow Publish a/b"
		f := strings.Fields(r)
		out = append(out, brokerconfig.Rule{Effect: f[0], Access: f[1], Topic: f[2]})
	}
	return out
}

var alice = Client{Username: "alice", ClientID: "dev-1"}
var bob = Client{Username: "bob", ClientID: "dev-2"}
var anon = Client{ClientID: "guest-7"}

func TestSemantics(t *testing.T) {
	idx := NewIndex([]brokerconfig.ACL{
		{Name: "ns/devices", Subjects: brokerconfig.Subjects{AllAuthenticated: true}, Rules: rules(
			"Deny PublishSubscribe telemetry/alice/secret",
			"Allow Publish telemetry/%u/#",
			"Allow Subscribe commands/%u/+",
			"Allow Subscribe clients/%c/#",
			"Allow PublishSubscribe public/#",
		)},
		{Name: "ns/alice-extra", Subjects: brokerconfig.Subjects{Users: []string{"alice"}}, Rules: rules(
			"Allow PublishSubscribe telemetry/alice/secret",
			"Allow Subscribe telemetry/+/status",
			"Deny Subscribe public/private/#",
		)},
		{Name: "ns/guests", Subjects: brokerconfig.Subjects{Anonymous: true}, Rules: rules(
			"Allow Subscribe public/+",
			"Allow Subscribe $SYS/broker/uptime",
		)},
	})
	cases := []struct {
		c      Client
		access Access
		topic  string
		want   bool
	}{
		{alice, Publish, "telemetry/alice/temp", true},
		{alice, Publish, "telemetry/alice", true}, // '#' matches the parent level
		{alice, Publish, "telemetry/bob/temp", false},
		{bob, Publish, "telemetry/bob/temp", true},
		{alice, Publish, "telemetry/alice/secret", false}, // a deny in one ACL beats an allow in another
		{alice, Subscribe, "commands/alice/reboot", true},
		{alice, Subscribe, "commands/alice/+", true},
		{alice, Subscribe, "commands/alice/#", false},  // '+' rule does not cover '#'
		{alice, Subscribe, "commands/+/reboot", false}, // would reach other users' commands
		{alice, Subscribe, "clients/dev-1/x/y", true},
		{alice, Subscribe, "clients/dev-2/x", false},
		{alice, Subscribe, "telemetry/+/status", true},
		{bob, Subscribe, "telemetry/+/status", false},
		{alice, Subscribe, "public/#", false}, // overlaps alice's deny on public/private/#
		{bob, Subscribe, "public/#", true},
		{alice, Subscribe, "public/news", true},
		{alice, Subscribe, "public/private/x", false},
		{alice, Publish, "commands/alice/reboot", false}, // subscribe-only rule
		{anon, Subscribe, "public/news", true},
		{anon, Publish, "public/news", false},
		{anon, Subscribe, "telemetry/alice/temp", false},
		{anon, Subscribe, "$SYS/broker/uptime", true},
		{bob, Subscribe, "#", false},
		{alice, Publish, "nothing/matches", false}, // deny by default
	}
	for _, tc := range cases {
		if got := idx.Allowed(tc.c, tc.access, tc.topic); got != tc.want {
			t.Errorf("%s %v %q: got %v, want %v", tc.c.Username, tc.access, tc.topic, got, tc.want)
		}
	}
}

func TestWildcardsDoNotMatchDollarTopics(t *testing.T) {
	idx := NewIndex([]brokerconfig.ACL{{Name: "all", Subjects: brokerconfig.Subjects{AllAuthenticated: true}, Rules: rules("Allow PublishSubscribe #", "Allow PublishSubscribe +/x")}})
	if idx.Allowed(alice, Subscribe, "$SYS/broker/load") || idx.Allowed(alice, Publish, "$SYS/x") {
		t.Error("'#' or '+' at the first level matched a $ topic")
	}
	if !idx.Allowed(alice, Publish, "a/x") || !idx.Allowed(alice, Subscribe, "a/+/c") {
		t.Error("'#' should allow ordinary topics")
	}
}

func TestNilIndexDeniesEverything(t *testing.T) {
	var idx *Index
	if idx.Allowed(alice, Publish, "a") {
		t.Error("no bundle loaded must mean deny")
	}
}

// --- a slow reference implementation, straight from the definition ---

func matchesTopic(filter, topic string, c Client) bool {
	f, t := strings.Split(filter, "/"), strings.Split(topic, "/")
	for i, fl := range f {
		if fl == "#" {
			return !(i == 0 && strings.HasPrefix(t[0], "$"))
		}
		if i >= len(t) {
			return false
		}
		switch fl {
		case "+":
			if i == 0 && strings.HasPrefix(t[0], "$") {
				return false
			}
		case "%u":
			if c.Username == "" || t[i] != c.Username {
				return false
			}
		case "%c":
			if t[i] != c.ClientID {
				return false
			}
		default:
			if fl != t[i] {
				return false
			}
		}
	}
	return len(f) == len(t)
}

// For the reference, a filter covers/overlaps another if it does so for
// every/some topic drawn from a finite universe that includes the test
// alphabet: exhaustive, and obviously right.
func universe() []string {
	words := []string{"a", "b", "alice", "dev-1", "guest-7", "$SYS"}
	var out []string
	var gen func(prefix []string, depth int)
	gen = func(prefix []string, depth int) {
		if depth > 0 {
			out = append(out, strings.Join(prefix, "/"))
		}
		if depth == 4 {
			return
		}
		for _, w := range words {
			if depth > 0 && w == "$SYS" {
				continue
			}
			gen(append(prefix, w), depth+1)
		}
	}
	gen(nil, 0)
	return out
}

func reference(acls []brokerconfig.ACL, topics []string, c Client, access Access, topic string) bool {
	var sub []string // topics the subscription filter matches
	if access == Subscribe {
		for _, t := range topics {
			if matchesTopic(topic, t, Client{}) || (topic == t) {
				sub = append(sub, t)
			}
		}
	}
	allow := false
	for _, a := range acls {
		applies := (c.Username == "" && a.Subjects.Anonymous) || (c.Username != "" && a.Subjects.AllAuthenticated)
		for _, u := range a.Subjects.Users {
			applies = applies || (c.Username != "" && u == c.Username)
		}
		if !applies {
			continue
		}
		for _, r := range a.Rules {
			if (access == Publish && r.Access == "Subscribe") || (access == Subscribe && r.Access == "Publish") {
				continue
			}
			var match bool
			if access == Publish {
				match = matchesTopic(r.Topic, topic, c)
			} else {
				covers, overlaps := len(sub) > 0, false
				for _, t := range sub {
					m := matchesTopic(r.Topic, t, c)
					covers = covers && m
					overlaps = overlaps || m
				}
				match = (r.Effect == "Allow" && covers) || (r.Effect == "Deny" && overlaps)
			}
			if match {
				if r.Effect == "Deny" {
					return false
				}
				allow = true
				break
			}
		}
	}
	return allow
}

func randomFilter(r *rand.Rand, wild bool) string {
	words := []string{"a", "b", "alice", "dev-1"}
	n := 1 + r.IntN(3)
	var levels []string
	for i := 0; i < n; i++ {
		switch x := r.IntN(10); {
		case wild && x == 0 && i == n-1:
			levels = append(levels, "#")
		case wild && x == 1:
			levels = append(levels, "+")
		case wild && x == 2:
			levels = append(levels, "%u")
		case wild && x == 3:
			levels = append(levels, "%c")
		default:
			levels = append(levels, words[r.IntN(len(words))])
		}
	}
	if r.IntN(20) == 0 {
		levels[0] = "$SYS"
	}
	return strings.Join(levels, "/")
}

var rounds = flag.Int("acl.rounds", 2000, "random rule sets to compare against the reference (20000 found no difference)")

// The trie must agree with the reference on thousands of random rule sets
// and questions.
func TestIndexAgreesWithReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	topics := universe()
	clients := []Client{alice, {Username: "b", ClientID: "a"}, anon}
	for round := 0; round < *rounds; round++ {
		var acls []brokerconfig.ACL
		for i := 0; i < 1+r.IntN(3); i++ {
			a := brokerconfig.ACL{Name: fmt.Sprint(i), Subjects: brokerconfig.Subjects{
				AllAuthenticated: r.IntN(3) == 0, Anonymous: r.IntN(4) == 0, Users: []string{"alice"}}}
			for j := 0; j < 1+r.IntN(4); j++ {
				a.Rules = append(a.Rules, brokerconfig.Rule{
					Topic:  randomFilter(r, true),
					Access: []string{"Publish", "Subscribe", "PublishSubscribe"}[r.IntN(3)],
					Effect: []string{"Allow", "Allow", "Deny"}[r.IntN(3)],
				})
			}
			acls = append(acls, a)
		}
		idx := NewIndex(acls)
		for q := 0; q < 40; q++ {
			c := clients[r.IntN(len(clients))]
			var access Access
			var topic string
			if r.IntN(2) == 0 {
				access, topic = Publish, topics[r.IntN(len(topics))]
			} else {
				access, topic = Subscribe, strings.ReplaceAll(strings.ReplaceAll(randomFilter(r, true), "%u", "alice"), "%c", "dev-1")
			}
			if got, want := idx.Allowed(c, access, topic), reference(acls, topics, c, access, topic); got != want {
				t.Fatalf("round %d: %+v %v %q: index says %v, reference %v\nacls: %+v", round, c, access, topic, got, want, acls)
			}
		}
	}
}

// The hot path: a publish check and a delivery check for a typical device
// topic, with a bundle of 10 rules and one of 10,000.
func BenchmarkAllowed(b *testing.B) {
	small := []brokerconfig.ACL{{Name: "devices", Subjects: brokerconfig.Subjects{AllAuthenticated: true}, Rules: []brokerconfig.Rule{
		{Topic: "devices/%u/#", Access: brokerconfig.AccessPublish, Effect: brokerconfig.EffectAllow},
		{Topic: "devices/+/status", Access: brokerconfig.AccessSubscribe, Effect: brokerconfig.EffectAllow},
	}}}
	large := append([]brokerconfig.ACL{}, small...)
	for i := range 1000 {
		var rules []brokerconfig.Rule
		for j := range 10 {
			rules = append(rules, brokerconfig.Rule{Topic: fmt.Sprintf("tenant-%d/site-%d/#", i, j), Access: brokerconfig.AccessPublishSubscribe, Effect: brokerconfig.EffectAllow})
		}
		large = append(large, brokerconfig.ACL{Name: fmt.Sprintf("t%d", i), Subjects: brokerconfig.Subjects{Users: []string{fmt.Sprintf("user-%d", i)}}, Rules: rules})
	}
	c := Client{Username: "sensor-7", ClientID: "sensor-7-a"}
	for name, acls := range map[string][]brokerconfig.ACL{"10rules": small, "10krules": large} {
		idx := NewIndex(acls)
		b.Run(name+"/publish", func(b *testing.B) {
			for b.Loop() {
				if !idx.Allowed(c, Publish, "devices/sensor-7/temperature") {
					b.Fatal("denied")
				}
			}
		})
		b.Run(name+"/deliver", func(b *testing.B) {
			for b.Loop() {
				if !idx.Allowed(c, Subscribe, "devices/sensor-7/status") {
					b.Fatal("denied")
				}
			}
		})
	}
}
