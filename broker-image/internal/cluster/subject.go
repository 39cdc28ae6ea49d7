package cluster

import (
	"errors"
	"strings"
)

// MQTT topics travel between pods as NATS subjects. The mapping is per
// level, reversible, and keeps every byte NATS gives a meaning out of the
// subject (pitfall 11 in CLUSTERING.md):
//
//   - an MQTT level is one NATS token; '/' becomes '.';
//   - '.', '*', '>', '%', '$', whitespace, control characters and DEL are
//     written %XX (two upper-case hex digits), so no level can be read as a
//     wildcard or split in two, and no topic lands in a '$' namespace;
//   - an empty level (a/​/b, /a, a/) is the token "%", which no escape
//     produces (an escape always has two hex digits after '%');
//   - in a filter, the level "+" is NATS's "*" and "#" is ">"; "a/#" also
//     matches "a" itself, so it needs two NATS subjects ("a" and "a.>").
//
// A 65,535-byte topic may grow to three times its length; the embedded
// server's control line limit is raised to fit (see maxControlLine).

const hexDigits = "0123456789ABCDEF"

func mustEscape(c byte) bool {
	switch c {
	case '.', '*', '>', '%', '$', 0x7f:
		return true
	}
	return c <= ' '
}

// encodeLevel writes one MQTT topic level as a NATS token.
func encodeLevel(b *strings.Builder, level string) {
	if level == "" {
		b.WriteByte('%')
		return
	}
	for i := 0; i < len(level); i++ {
		c := level[i]
		if mustEscape(c) {
			b.WriteByte('%')
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
			continue
		}
		b.WriteByte(c)
	}
}

// TopicSubject is the NATS subject (without prefix) of an MQTT topic name.
func TopicSubject(topic string) string {
	var b strings.Builder
	b.Grow(len(topic) + 8)
	for i, level := range strings.Split(topic, "/") {
		if i > 0 {
			b.WriteByte('.')
		}
		encodeLevel(&b, level)
	}
	return b.String()
}

// FilterSubjects are the NATS subjects (without prefix) that together match
// what the MQTT topic filter matches: one, or two for a filter ending in
// "/#" (which matches its parent level too).
func FilterSubjects(filter string) []string {
	levels := strings.Split(filter, "/")
	var b strings.Builder
	b.Grow(len(filter) + 8)
	var parent string
	for i, level := range levels {
		if i > 0 {
			if level == "#" && i == len(levels)-1 {
				parent = b.String()
			}
			b.WriteByte('.')
		}
		switch level {
		case "+":
			b.WriteByte('*')
		case "#":
			b.WriteByte('>')
		default:
			encodeLevel(&b, level)
		}
	}
	if parent != "" {
		return []string{parent, b.String()}
	}
	return []string{b.String()}
}

var errBadSubject = errors.New("not a subject this broker encoded")

// SubjectTopic decodes what TopicSubject encoded.
func SubjectTopic(subject string) (string, error) {
	var b strings.Builder
	b.Grow(len(subject))
	for i, tok := range strings.Split(subject, ".") {
		if i > 0 {
			b.WriteByte('/')
		}
		if tok == "%" {
			continue
		}
		if tok == "" {
			return "", errBadSubject
		}
		for j := 0; j < len(tok); j++ {
			c := tok[j]
			if c != '%' {
				b.WriteByte(c)
				continue
			}
			if j+2 >= len(tok) {
				return "", errBadSubject
			}
			hi, lo := unhex(tok[j+1]), unhex(tok[j+2])
			if hi < 0 || lo < 0 {
				return "", errBadSubject
			}
			b.WriteByte(byte(hi<<4 | lo))
			j += 2
		}
	}
	return b.String(), nil
}

func unhex(c byte) int {
	switch {
	case c >= '0' && c <= '9':
		return int(c - '0')
	case c >= 'A' && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}
