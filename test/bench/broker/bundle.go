package main

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"

	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
)

// user is a benchmark identity: the password clients send and the hash the
// bundle holds, made the way the operator makes a generated password.
type user struct {
	name, password, hash string
}

func newUser(name string) (user, error) {
	secret := make([]byte, 32)
	salt := make([]byte, 16)
	if _, err := rand.Read(secret); err != nil {
		return user{}, err
	}
	if _, err := rand.Read(salt); err != nil {
		return user{}, err
	}
	password := base64.RawURLEncoding.EncodeToString(secret) // 43 characters, 256 bits
	hash, err := passwordhash.HashGenerated(password, salt)
	if err != nil {
		return user{}, err
	}
	return user{name: name, password: password, hash: hash}, nil
}

// benchUsers are the identities the load generator logs in as.
func benchUsers(n int) ([]user, error) {
	users := make([]user, n)
	for i := range users {
		u, err := newUser(fmt.Sprintf("bench-%03d", i))
		if err != nil {
			return nil, err
		}
		users[i] = u
	}
	return users, nil
}

// Topics of the scenarios. Publishers of fan-in publish to their own topic
// (fanInTopic), the subscriber takes them all with a wildcard.
const (
	fanInFilter = "bench/fanin/+"
	fanOutTopic = "bench/fanout/feed"
)

func fanInTopic(username string) string { return "bench/fanin/" + username }
func idleTopic(clientID string) string  { return "bench/idle/" + clientID }

// benchACL is the ten rules that let the generator do its work, with the
// denies first as a real ACL would have them (first match decides).
func benchACL(users []user) brokerconfig.ACL {
	names := make([]string, len(users))
	for i, u := range users {
		names[i] = u.name
	}
	allow, deny := brokerconfig.EffectAllow, brokerconfig.EffectDeny
	pub, sub := brokerconfig.AccessPublish, brokerconfig.AccessSubscribe
	return brokerconfig.ACL{
		Name:     "bench/load",
		Subjects: brokerconfig.Subjects{Users: names},
		Rules: []brokerconfig.Rule{
			{Topic: "bench/fanin/admin", Access: pub, Effect: deny},
			{Topic: "bench/control/#", Access: brokerconfig.AccessPublishSubscribe, Effect: deny},
			{Topic: "$SYS/#", Access: sub, Effect: deny},
			{Topic: "bench/fanin/%u", Access: pub, Effect: allow},
			{Topic: fanInFilter, Access: sub, Effect: allow},
			{Topic: fanOutTopic, Access: pub, Effect: allow},
			{Topic: fanOutTopic, Access: sub, Effect: allow},
			{Topic: "bench/idle/%c", Access: sub, Effect: allow},
			{Topic: "bench/status/%u", Access: pub, Effect: allow},
			{Topic: "bench/status/+", Access: sub, Effect: allow},
		},
	}
}

// smallBundle holds the benchmark's users and its ten rules.
func smallBundle(users []user, generation int64) *brokerconfig.AuthBundle {
	b := &brokerconfig.AuthBundle{Generation: generation, ACLs: []brokerconfig.ACL{benchACL(users)}}
	for _, u := range users {
		b.Users = append(b.Users, brokerconfig.User{Username: u.name, PasswordHash: u.hash})
	}
	return b
}

// tenantUsers are the other users of a large bundle: they never connect,
// they only make the bundle and its ACL index big.
func tenantUsers(n int) ([]user, error) {
	users := make([]user, n)
	for i := range users {
		u, err := newUser(fmt.Sprintf("tenant-%05d", i))
		if err != nil {
			return nil, err
		}
		users[i] = u
	}
	return users, nil
}

// largeBundle is smallBundle plus one TopicACL of ten rules per tenant user,
// as a broker with many device users has: each user's own subtree, shared
// fleet topics per group (one group per 20 users), a deny, a rule that
// starts with a wildcard, and a rule inside the benchmark's own topic tree,
// so the index walk for the measured topics meets other users' rules.
func largeBundle(users, tenants []user, generation int64) *brokerconfig.AuthBundle {
	b := smallBundle(users, generation)
	allow, deny := brokerconfig.EffectAllow, brokerconfig.EffectDeny
	pub, sub, both := brokerconfig.AccessPublish, brokerconfig.AccessSubscribe, brokerconfig.AccessPublishSubscribe
	for i, t := range tenants {
		b.Users = append(b.Users, brokerconfig.User{Username: t.name, PasswordHash: t.hash})
		u, group := t.name, fmt.Sprintf("group-%03d", i/20)
		b.ACLs = append(b.ACLs, brokerconfig.ACL{
			Name:     "tenant/" + u,
			Subjects: brokerconfig.Subjects{Users: []string{u}},
			Rules: []brokerconfig.Rule{
				{Topic: "tenants/" + u + "/secrets/#", Access: both, Effect: deny},
				{Topic: "tenants/" + u + "/telemetry/#", Access: pub, Effect: allow},
				{Topic: "tenants/" + u + "/commands/#", Access: sub, Effect: allow},
				{Topic: "tenants/" + u + "/status", Access: both, Effect: allow},
				{Topic: "tenants/" + u + "/config/+", Access: sub, Effect: allow},
				{Topic: "fleet/" + group + "/broadcast", Access: sub, Effect: allow},
				{Topic: "fleet/" + group + "/+/events", Access: pub, Effect: allow},
				{Topic: "devices/" + u + "/#", Access: both, Effect: allow},
				{Topic: "+/" + u + "/alerts", Access: sub, Effect: allow},
				{Topic: "bench/fanin/" + u, Access: pub, Effect: allow},
			},
		})
	}
	return b
}

func ruleCount(b *brokerconfig.AuthBundle) int {
	n := 0
	for _, a := range b.ACLs {
		n += len(a.Rules)
	}
	return n
}
