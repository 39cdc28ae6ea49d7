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
// rule. Few ACLs apply to one client: the first eight live in an array (no
// allocation, and no pointer into itself, so a walk stays on the stack).
type verdicts struct {
	n        int
	fixed    [8]ruleRef
	overflow []ruleRef
}

func (v *verdicts) slot(acl int32) *ruleRef {
	for i := range v.n {
		if v.fixed[i].acl == acl {
			return &v.fixed[i]
		}
	}
	for i := range v.overflow {
		if v.overflow[i].acl == acl {
			return &v.overflow[i]
		}
	}
	return nil
}

func (v *verdicts) offer(ref ruleRef) {
	if cur := v.slot(ref.acl); cur != nil {
		if ref.order < cur.order {
			*cur = ref
		}
		return
	}
	if v.n < len(v.fixed) {
		v.fixed[v.n] = ref
		v.n++
		return
	}
	v.overflow = append(v.overflow, ref)
}

func (v *verdicts) allowed() bool {
	allow := false
	for _, r := range append(v.fixed[:v.n:v.n], v.overflow...) {
		if r.deny {
			return false
		}
		allow = true
	}
	return allow
}

// maxLevels is how many topic levels a check splits without allocating;
// deeper topics still work, with one allocation.
const maxLevels = 16

// walk is one check in progress. It lives on the caller's stack: a check
// allocates nothing for topics of up to maxLevels levels.
type walk struct {
	idx    *Index
	c      Client
	access Access
	v      verdicts
}

// consider offers the rules of refs that govern this access and apply to
// this client; with denyOnly, only Deny rules.
func (w *walk) consider(refs []ruleRef, denyOnly bool) {
	for _, r := range refs {
		if r.access&w.access != 0 && (!denyOnly || r.deny) && w.idx.acls[r.acl].applies(w.c) {
			w.v.offer(r)
		}
	}
}

// Allowed reports whether client may publish to topic (access Publish) or
// subscribe to the filter topic (access Subscribe).
func (idx *Index) Allowed(c Client, access Access, topic string) bool {
	if idx == nil {
		return false
	}
	w := walk{idx: idx, c: c, access: access}
	var buf [maxLevels]string
	levels := splitLevels(buf[:0], topic)
	if access == Publish {
		w.matchTopic(&idx.root, levels, 0)
	} else {
		w.matchFilter(&idx.root, levels, 0, false)
	}
	return w.v.allowed()
}

func splitLevels(dst []string, topic string) []string {
	for {
		i := strings.IndexByte(topic, '/')
		if i < 0 {
			return append(dst, topic)
		}
		dst = append(dst, topic[:i])
		topic = topic[i+1:]
	}
}

// matchTopic finds the rules whose filter matches the concrete topic.
func (w *walk) matchTopic(n *node, levels []string, depth int) {
	// MQTT: wildcards at the first level do not match topics starting with '$'.
	dollar := depth == 0 && strings.HasPrefix(levels[0], "$")
	if !dollar && len(n.hash) > 0 {
		w.consider(n.hash, false) // '#' also matches the parent level itself
	}
	if depth == len(levels) {
		w.consider(n.rules, false)
		return
	}
	level := levels[depth]
	if child := n.children[level]; child != nil {
		w.matchTopic(child, levels, depth+1)
	}
	if n.plus != nil && !dollar {
		w.matchTopic(n.plus, levels, depth+1)
	}
	if n.user != nil && w.c.Username != "" && level == w.c.Username {
		w.matchTopic(n.user, levels, depth+1)
	}
	if n.client != nil && w.c.ClientID != "" && level == w.c.ClientID {
		w.matchTopic(n.client, levels, depth+1)
	}
}

// matchFilter finds, for a subscription filter, the Allow rules that cover it
// and the Deny rules that overlap it. denyOnly is set below a branch that
// cannot cover the filter, where only overlapping Deny rules count.
func (w *walk) matchFilter(n *node, levels []string, depth int, denyOnly bool) {
	dollar := depth == 0 && strings.HasPrefix(levels[0], "$")
	if len(n.hash) > 0 && !dollar {
		// A rule '#' here covers and overlaps everything below.
		w.consider(n.hash, denyOnly)
	}
	if depth == len(levels) {
		w.consider(n.rules, denyOnly)
		return
	}
	level := levels[depth]
	if level == "#" {
		// The filter reaches everything below: only overlapping denies apply,
		// except rules ending exactly at the parent, which '#' also matches.
		w.consider(n.rules, true)
		if depth == 0 && n.plus != nil {
			// At the root, '+/#' matches every topic '#' does ('#' has no
			// empty parent topic there), so it covers '#'.
			w.consider(n.plus.hash, denyOnly)
		}
		w.walkSubtree(n, true, depth == 0)
		return
	}
	if level == "+" {
		// Literal and substitution children overlap but do not cover '+'.
		for name, child := range n.children {
			if depth == 0 && strings.HasPrefix(name, "$") {
				continue // '+' at the root never reaches $ topics
			}
			w.matchFilter(child, levels, depth+1, true)
		}
		for _, sub := range substitutions(n, w.c) {
			if sub != nil {
				w.matchFilter(sub, levels, depth+1, true)
			}
		}
		if n.plus != nil && !dollar {
			w.matchFilter(n.plus, levels, depth+1, denyOnly)
		}
		return
	}
	if child := n.children[level]; child != nil {
		w.matchFilter(child, levels, depth+1, denyOnly)
	}
	if n.plus != nil && !dollar {
		w.matchFilter(n.plus, levels, depth+1, denyOnly)
	}
	if n.user != nil && w.c.Username != "" && level == w.c.Username {
		w.matchFilter(n.user, levels, depth+1, denyOnly)
	}
	if n.client != nil && w.c.ClientID != "" && level == w.c.ClientID {
		w.matchFilter(n.client, levels, depth+1, denyOnly)
	}
}

// walkSubtree considers the rules of every node below n (and the '#' rules
// of n's descendants), for a filter ending in '#'.
func (w *walk) walkSubtree(n *node, denyOnly, skipDollar bool) {
	for level, child := range n.children {
		if skipDollar && strings.HasPrefix(level, "$") {
			continue
		}
		w.consider(child.rules, denyOnly)
		w.consider(child.hash, denyOnly)
		w.walkSubtree(child, denyOnly, false)
	}
	for _, sub := range [...]*node{substitutions(n, w.c)[0], substitutions(n, w.c)[1], n.plus} {
		if sub == nil {
			continue
		}
		w.consider(sub.rules, denyOnly)
		w.consider(sub.hash, denyOnly)
		w.walkSubtree(sub, denyOnly, false)
	}
}

// substitutions are the %u and %c branches of n that can match for c (nil
// where not): an anonymous client has no username to substitute.
func substitutions(n *node, c Client) [2]*node {
	var out [2]*node
	if n.user != nil && c.Username != "" {
		out[0] = n.user
	}
	if n.client != nil && c.ClientID != "" {
		out[1] = n.client
	}
	return out
}
