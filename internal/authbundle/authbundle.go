// Package authbundle turns a broker's MQTTUsers and TopicACLs into the auth
// bundle its pods enforce, and answers the questions the user and ACL
// controllers ask about it: which MQTTUser owns a username, and which rules
// apply to a user. Everything here is pure: no client, clock or randomness
// (password hashing happens in the controller, which passes hashes in).
package authbundle

import (
	"fmt"
	"slices"
	"strings"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

// Username is the username an MQTTUser logs in with.
func Username(u *v1alpha1.MQTTUser) string {
	if u.Spec.Username != "" {
		return string(u.Spec.Username)
	}
	return u.Name
}

// older reports whether a was created before b; the name breaks ties, so
// every controller that asks gets the same answer.
func older(a, b *v1alpha1.MQTTUser) bool {
	if !a.CreationTimestamp.Equal(&b.CreationTimestamp) {
		return a.CreationTimestamp.Before(&b.CreationTimestamp)
	}
	return a.Name < b.Name
}

// Owners decides, for users of one broker, which MQTTUser owns each
// username: the oldest. owners maps username to that user's object name;
// conflicts maps each other claimant's object name to the owner's.
func Owners(users []v1alpha1.MQTTUser) (owners map[string]string, conflicts map[string]string) {
	owners, conflicts = map[string]string{}, map[string]string{}
	byName := map[string]*v1alpha1.MQTTUser{}
	for i := range users {
		u := &users[i]
		if !u.DeletionTimestamp.IsZero() {
			continue
		}
		name := Username(u)
		if cur, ok := byName[name]; !ok || older(u, cur) {
			byName[name] = u
		}
	}
	for name, u := range byName {
		owners[name] = u.Name
	}
	for i := range users {
		u := &users[i]
		if !u.DeletionTimestamp.IsZero() {
			continue
		}
		if owner := owners[Username(u)]; owner != u.Name {
			conflicts[u.Name] = owner
		}
	}
	return owners, conflicts
}

// User is a username with the hash of its password.
type User struct {
	Username     string
	PasswordHash string
	// CertificateSHA256 are the fingerprints of a certificate user's
	// client certificates; such a user has no password hash.
	CertificateSHA256 []string
	// Limits are the user's quotas (spec.limits), nil without.
	Limits *brokerconfig.UserLimits
}

// Limits converts an MQTTUser's spec.limits for the bundle; nil when it
// sets none.
func Limits(u *v1alpha1.MQTTUser) *brokerconfig.UserLimits {
	l := u.Spec.Limits
	if l == nil || *l == (v1alpha1.UserLimits{}) {
		return nil
	}
	return &brokerconfig.UserLimits{MaxConnections: l.MaxConnections, MaxSubscriptions: l.MaxSubscriptions,
		PublishRate: l.PublishRate, PublishBytesPerSecond: l.PublishBytesPerSecond, MaxInflight: l.MaxInflight}
}

// Render builds the bundle of users and ACLs. ACLs are ordered by name (the
// result does not depend on their order, but the revision must not change
// when a list comes back in another order). An ACL whose rules fail the
// broker's validation (which the CRD's CEL rules should already have caught)
// is left out and reported in rejected, so one bad object cannot keep every
// other change from the pods.
func Render(users []User, acls []v1alpha1.TopicACL) (bundle *brokerconfig.AuthBundle, rejected map[string]error) {
	bundle = &brokerconfig.AuthBundle{Users: []brokerconfig.User{}, ACLs: []brokerconfig.ACL{}}
	for _, u := range users {
		bundle.Users = append(bundle.Users, brokerconfig.User{Username: u.Username, PasswordHash: u.PasswordHash, CertificateSHA256: u.CertificateSHA256, Limits: u.Limits})
	}
	sorted := slices.Clone(acls)
	slices.SortFunc(sorted, func(a, b v1alpha1.TopicACL) int { return strings.Compare(a.Name, b.Name) })
	rejected = map[string]error{}
	for i := range sorted {
		a := &sorted[i]
		if !a.DeletionTimestamp.IsZero() {
			continue
		}
		converted, err := ConvertACL(a)
		if err != nil {
			rejected[a.Name] = err
			continue
		}
		bundle.ACLs = append(bundle.ACLs, converted)
	}
	bundle.Seal()
	return bundle, rejected
}

// ConvertACL turns a TopicACL into its bundle form, checking it as the
// broker will.
func ConvertACL(a *v1alpha1.TopicACL) (brokerconfig.ACL, error) {
	out := brokerconfig.ACL{
		Name: a.Name,
		Subjects: brokerconfig.Subjects{
			AllAuthenticated: a.Spec.Subjects.AllAuthenticated,
			Anonymous:        a.Spec.Subjects.Anonymous,
		},
	}
	for _, u := range a.Spec.Subjects.Users {
		out.Subjects.Users = append(out.Subjects.Users, string(u))
	}
	for _, r := range a.Spec.Rules {
		effect := r.Effect
		if effect == "" {
			effect = v1alpha1.EffectAllow
		}
		out.Rules = append(out.Rules, brokerconfig.Rule{Topic: string(r.Topic), Access: string(r.Access), Effect: string(effect)})
	}
	check := brokerconfig.AuthBundle{Version: brokerconfig.BundleVersion, ACLs: []brokerconfig.ACL{out}}
	if err := check.Validate(); err != nil {
		return brokerconfig.ACL{}, fmt.Errorf("the broker would refuse this TopicACL: %w", err)
	}
	return out, nil
}

// AppliesTo reports whether the ACL's subjects include an authenticated
// client with this username.
func AppliesTo(a *v1alpha1.TopicACL, username string) bool {
	if a.Spec.Subjects.AllAuthenticated {
		return true
	}
	return slices.Contains(a.Spec.Subjects.Users, v1alpha1.Username(username))
}

// Permissions lists the rules that apply to username, in the order the
// broker evaluates them (ACLs by name, rules in order), with %u replaced.
func Permissions(username string, acls []v1alpha1.TopicACL) []v1alpha1.EffectiveRule {
	sorted := slices.Clone(acls)
	slices.SortFunc(sorted, func(a, b v1alpha1.TopicACL) int { return strings.Compare(a.Name, b.Name) })
	var out []v1alpha1.EffectiveRule
	for i := range sorted {
		a := &sorted[i]
		if !a.DeletionTimestamp.IsZero() || !AppliesTo(a, username) {
			continue
		}
		for _, r := range a.Spec.Rules {
			effect := r.Effect
			if effect == "" {
				effect = v1alpha1.EffectAllow
			}
			out = append(out, v1alpha1.EffectiveRule{ACL: a.Name, Topic: substitute(string(r.Topic), username), Access: r.Access, Effect: effect})
		}
	}
	return out
}

func substitute(topic, username string) string {
	levels := strings.Split(topic, "/")
	for i, l := range levels {
		if l == "%u" {
			levels[i] = username
		}
	}
	return strings.Join(levels, "/")
}

// UnknownUsers lists the usernames an ACL names that no MQTTUser owns.
func UnknownUsers(a *v1alpha1.TopicACL, owners map[string]string) []string {
	var out []string
	for _, u := range a.Spec.Subjects.Users {
		if _, ok := owners[string(u)]; !ok {
			out = append(out, string(u))
		}
	}
	slices.Sort(out)
	return out
}
