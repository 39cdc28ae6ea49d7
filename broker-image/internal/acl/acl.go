// Package acl decides whether a client may publish to a topic or subscribe to
// a filter, from the ACLs of an auth bundle. Rules are indexed in a trie keyed
// by topic level, so a check walks only the branches its topic can match:
// 10,000 rules cost about what 10 do.
//
// Semantics (see brokerconfig.AuthBundle): within one ACL the first matching
// rule decides; across ACLs any Deny wins, then any Allow; nothing matching
// means deny. For a SUBSCRIBE, an Allow rule matches only when it covers every
// topic the requested filter can match, and a Deny rule matches as soon as it
// overlaps the filter, so a wildcard subscription can never reach a denied
// topic.
package acl

import (
	"strings"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// Access is what a client wants to do.
type Access uint8

const (
	// Publish is a PUBLISH to a concrete topic.
	Publish Access = 1 << iota
	// Subscribe is a SUBSCRIBE to a topic filter.
	Subscribe
)

// Client is who is asking.
type Client struct {
	Username string // empty for anonymous clients
	ClientID string
}

type ruleRef struct {
	acl    int32 // index into Index.acls
	order  int32 // position of the rule within its ACL
	access Access
	deny   bool
}

type node struct {
	children map[string]*node
	plus     *node // '+'
	user     *node // '%u'
	client   *node // '%c'
	hash     []ruleRef
	rules    []ruleRef // rules whose filter ends at this node
}

type aclSubjects struct {
	name             string
	users            map[string]struct{}
	allAuthenticated bool
	anonymous        bool
}

func (s *aclSubjects) applies(c Client) bool {
	if c.Username == "" {
		return s.anonymous
	}
	if s.allAuthenticated {
		return true
	}
	_, ok := s.users[c.Username]
	return ok
}

// Index is an immutable, concurrency-safe view of a bundle's ACLs.
type Index struct {
	root node
	acls []aclSubjects
}

// NewIndex builds the index. The bundle must have passed Validate.
func NewIndex(acls []brokerconfig.ACL) *Index {
	idx := &Index{acls: make([]aclSubjects, len(acls))}
	for i, a := range acls {
		s := aclSubjects{name: a.Name, allAuthenticated: a.Subjects.AllAuthenticated, anonymous: a.Subjects.Anonymous, users: map[string]struct{}{}}
		for _, u := range a.Subjects.Users {
			s.users[u] = struct{}{}
		}
		idx.acls[i] = s
		for j, r := range a.Rules {
			ref := ruleRef{acl: int32(i), order: int32(j), deny: r.Effect == brokerconfig.EffectDeny}
			switch r.Access {
			case brokerconfig.AccessPublish:
				ref.access = Publish
			case brokerconfig.AccessSubscribe:
				ref.access = Subscribe
			default:
				ref.access = Publish | Subscribe
			}
			idx.insert(r.Topic, ref)
		}
	}
	return idx
}

func (idx *Index) insert(filter string, ref ruleRef) {
	n := &idx.root
	for _, level := range strings.Split(filter, "/") {
		var next **node
		switch level {
		case "#":
			n.hash = append(n.hash, ref)
			return
		case "+":
			next = &n.plus
		case "%u":
			next = &n.user
		case "%c":
			next = &n.client
		default:
			if n.children == nil {
				n.children = map[string]*node{}
			}
			child := n.children[level]
			if child == nil {
				child = &node{}
				n.children[level] = child
			}
			n = child
			continue
		}
		if *next == nil {
			*next = &node{}
		}
		n = *next
	}
	n.rules = append(n.rules, ref)
}

// verdicts collects, per ACL that applies to the client, its first matching
// rule. Few ACLs apply to one client, so a small slice beats a map.
type verdicts struct {
	best []ruleRef
}

func (v *verdicts) offer(ref ruleRef) {
	for i := range v.best {
		if v.best[i].acl == ref.acl {
			if ref.order < v.best[i].order {
				v.best[i] = ref
			}
			return
		}
	}
	v.best = append(v.best, ref)
}

func (v *verdicts) allowed() bool {
	allow := false
	for _, r := range v.best {
		if r.deny {
			return false
		}
		allow = true
	}
	return allow
}

// Allowed reports whether client may publish to topic (access Publish) or
// subscribe to the filter topic (access Subscribe).
func (idx *Index) Allowed(c Client, access Access, topic string) bool {
	if idx == nil {
		return false
	}
	var v verdicts
	var stack [8]ruleRef
	v.best = stack[:0]
	consider := func(refs []ruleRef, ok func(ruleRef) bool) {
		for _, r := range refs {
			if r.access&access != 0 && ok(r) && idx.acls[r.acl].applies(c) {
				v.offer(r)
			}
		}
	}
	always := func(ruleRef) bool { return true }
	levels := splitLevels(topic)
	if access == Publish {
		idx.matchTopic(&idx.root, levels, 0, c, func(refs []ruleRef) { consider(refs, always) })
	} else {
		idx.matchFilter(&idx.root, levels, 0, c, consider)
	}
	return v.allowed()
}

func splitLevels(topic string) []string {
	return strings.Split(topic, "/")
}

// matchTopic finds the rules whose filter matches the concrete topic.
func (idx *Index) matchTopic(n *node, levels []string, depth int, c Client, emit func([]ruleRef)) {
	// MQTT: wildcards at the first level do not match topics starting with '$'.
	dollar := depth == 0 && strings.HasPrefix(levels[0], "$")
	if !dollar && len(n.hash) > 0 {
		emit(n.hash) // '#' also matches the parent level itself
	}
	if depth == len(levels) {
		emit(n.rules)
		return
	}
	level := levels[depth]
	if child := n.children[level]; child != nil {
		idx.matchTopic(child, levels, depth+1, c, emit)
	}
	if n.plus != nil && !dollar {
		idx.matchTopic(n.plus, levels, depth+1, c, emit)
	}
	if n.user != nil && c.Username != "" && level == c.Username {
		idx.matchTopic(n.user, levels, depth+1, c, emit)
	}
	if n.client != nil && c.ClientID != "" && level == c.ClientID {
		idx.matchTopic(n.client, levels, depth+1, c, emit)
	}
}

// matchFilter finds, for a subscription filter, the Allow rules that cover it
// and the Deny rules that overlap it.
func (idx *Index) matchFilter(n *node, levels []string, depth int, c Client, consider func([]ruleRef, func(ruleRef) bool)) {
	isDeny := func(r ruleRef) bool { return r.deny }
	dollar := depth == 0 && strings.HasPrefix(levels[0], "$")
	if len(n.hash) > 0 && !dollar {
		// A rule '#' here covers and overlaps everything below.
		consider(n.hash, func(ruleRef) bool { return true })
	}
	if depth == len(levels) {
		consider(n.rules, func(ruleRef) bool { return true })
		return
	}
	level := levels[depth]
	if level == "#" {
		// The filter reaches everything below: only overlapping denies apply,
		// except rules ending exactly at the parent, which '#' also matches.
		consider(n.rules, isDeny)
		if depth == 0 && n.plus != nil {
			// At the root, '+/#' matches every topic '#' does ('#' has no
			// empty parent topic there), so it covers '#'.
			consider(n.plus.hash, func(ruleRef) bool { return true })
		}
		idx.walkSubtree(n, c, func(refs []ruleRef) { consider(refs, isDeny) }, depth == 0)
		return
	}
	if level == "+" {
		// Literal and substitution children overlap but do not cover '+'.
		for name, child := range n.children {
			if depth == 0 && strings.HasPrefix(name, "$") {
				continue // '+' at the root never reaches $ topics
			}
			idx.matchFilterDenyOnly(child, levels, depth+1, c, consider)
		}
		for _, sub := range substitutions(n, c) {
			idx.matchFilterDenyOnly(sub, levels, depth+1, c, consider)
		}
		if n.plus != nil && !dollar {
			idx.matchFilter(n.plus, levels, depth+1, c, consider)
		}
		return
	}
	if child := n.children[level]; child != nil {
		idx.matchFilter(child, levels, depth+1, c, consider)
	}
	if n.plus != nil && !dollar {
		idx.matchFilter(n.plus, levels, depth+1, c, consider)
	}
	if n.user != nil && c.Username != "" && level == c.Username {
		idx.matchFilter(n.user, levels, depth+1, c, consider)
	}
	if n.client != nil && c.ClientID != "" && level == c.ClientID {
		idx.matchFilter(n.client, levels, depth+1, c, consider)
	}
}

// matchFilterDenyOnly continues a filter walk below a branch that cannot
// cover the filter: only Deny rules that overlap it count.
func (idx *Index) matchFilterDenyOnly(n *node, levels []string, depth int, c Client, consider func([]ruleRef, func(ruleRef) bool)) {
	denyOnly := func(refs []ruleRef, ok func(ruleRef) bool) {
		consider(refs, func(r ruleRef) bool { return r.deny && ok(r) })
	}
	idx.matchFilter(n, levels, depth, c, denyOnly)
}

// walkSubtree emits the rules of every node below n (and the '#' rules of n's
// descendants), for a filter ending in '#'.
func (idx *Index) walkSubtree(n *node, c Client, emit func([]ruleRef), skipDollar bool) {
	var walk func(n *node, top bool)
	walk = func(n *node, top bool) {
		for level, child := range n.children {
			if top && skipDollar && strings.HasPrefix(level, "$") {
				continue
			}
			emit(child.rules)
			emit(child.hash)
			walk(child, false)
		}
		subs := substitutions(n, c)
		if n.plus != nil {
			subs = append(subs, n.plus)
		}
		for _, sub := range subs {
			emit(sub.rules)
			emit(sub.hash)
			walk(sub, false)
		}
	}
	walk(n, true)
}

// substitutions are the %u and %c branches of n that can match for c: an
// anonymous client has no username to substitute.
func substitutions(n *node, c Client) []*node {
	var out []*node
	if n.user != nil && c.Username != "" {
		out = append(out, n.user)
	}
	if n.client != nil && c.ClientID != "" {
		out = append(out, n.client)
	}
	return out
}

// Rules returns how many rules the index holds, for metrics.
func (idx *Index) ACLs() int { return len(idx.acls) }
