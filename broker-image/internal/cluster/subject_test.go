package cluster

import (
	"strings"
	"testing"
)

func TestTopicSubject(t *testing.T) {
	for topic, want := range map[string]string{
		"a/b/c":          "a.b.c",
		"a.b/*/>/%/ /":   "a%2Eb.%2A.%3E.%25.%20.%",
		"/":              "%.%",
		"":               "%",
		"a//b":           "a.%.b",
		"$SYS/x":         "%24SYS.x",
		"tab\there/\x7f": "tab%09here.%7F",
		"ü/+x#":          "ü.+x#",
	} {
		if got := TopicSubject(topic); got != want {
			t.Errorf("TopicSubject(%q) = %q, want %q", topic, got, want)
		}
		back, err := SubjectTopic(want)
		if err != nil || back != topic {
			t.Errorf("SubjectTopic(%q) = %q, %v; want %q", want, back, err, topic)
		}
	}
}

func TestFilterSubjects(t *testing.T) {
	for filter, want := range map[string]string{
		"a/+/c":   "a.*.c",
		"#":       ">",
		"a/#":     "a a.>",
		"+/#":     "* *.>",
		"a.b/+":   "a%2Eb.*",
		"a//#":    "a.% a.%.>",
		"/+":      "%.*",
		"a/b#/c+": "a.b#.c+",
	} {
		if got := strings.Join(FilterSubjects(filter), " "); got != want {
			t.Errorf("FilterSubjects(%q) = %q, want %q", filter, got, want)
		}
	}
}

func TestSubjectTopicRefusesForeignSubjects(t *testing.T) {
	for _, s := range []string{"a..b", "%4", "%ZZ", "a.%2", "%2e"} {
		if _, err := SubjectTopic(s); err == nil {
			t.Errorf("SubjectTopic(%q) accepted", s)
		}
	}
}

// FuzzSubjectRoundTrip: every topic maps to a valid NATS subject (no empty
// token, no wildcard token, no whitespace, not in a '$' namespace) that
// maps back to it.
func FuzzSubjectRoundTrip(f *testing.F) {
	for _, s := range []string{"a/b", "", "/", "a.b/*/>/%/ /", "$SYS/x", "%41", "a//b/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		subj := TopicSubject(topic)
		if strings.HasPrefix(subj, "$") {
			t.Fatalf("%q -> %q starts with $", topic, subj)
		}
		for _, tok := range strings.Split(subj, ".") {
			if tok == "" || tok == "*" || tok == ">" || strings.ContainsAny(tok, " \t\r\n") {
				t.Fatalf("%q -> %q has token %q", topic, subj, tok)
			}
		}
		back, err := SubjectTopic(subj)
		if err != nil || back != topic {
			t.Fatalf("%q -> %q -> %q, %v", topic, subj, back, err)
		}
	})
}

func TestShareQueueNamesGroupAndFilter(t *testing.T) {
	// nats-server merges same-named queue subscriptions across subjects:
	// the name must differ for another group or another filter.
	a, b, c := shareQueue("g", "a/#"), shareQueue("g", "b/#"), shareQueue("h", "a/#")
	if a == b || a == c || shareQueue("g", "a/#") != a || shareQueue("g/x", "y") == shareQueue("g", "x/y") {
		t.Fatal("queue names collide")
	}
}
