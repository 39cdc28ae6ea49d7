package authbundle

import (
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
)

func user(name, username string, created int) v1alpha1.MQTTUser {
	return v1alpha1.MQTTUser{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(time.Unix(int64(created), 0))},
		Spec:       v1alpha1.MQTTUserSpec{Username: v1alpha1.Username(username)},
	}
}

func TestOwnersOldestWinsDeterministically(t *testing.T) {
	deleting := user("leaving", "shared", 1)
	deleting.DeletionTimestamp = &metav1.Time{Time: time.Unix(9, 0)}
	users := []v1alpha1.MQTTUser{
		user("b-late", "shared", 20), user("a-early", "shared", 10), user("c-same-second", "shared", 10),
		user("solo", "", 5), deleting,
	}
	owners, conflicts := Owners(users)
	if owners["shared"] != "a-early" || owners["solo"] != "solo" {
		t.Errorf("owners %v", owners)
	}
	if len(conflicts) != 2 || conflicts["b-late"] != "a-early" || conflicts["c-same-second"] != "a-early" {
		t.Errorf("conflicts %v", conflicts)
	}
	// The order of the list never matters.
	reversed := []v1alpha1.MQTTUser{users[4], users[3], users[2], users[1], users[0]}
	if o, _ := Owners(reversed); fmt.Sprint(o) != fmt.Sprint(owners) {
		t.Errorf("owners depend on list order: %v vs %v", o, owners)
	}
}

func acl(name string, subjects v1alpha1.ACLSubjects, rules ...v1alpha1.ACLRule) v1alpha1.TopicACL {
	return v1alpha1.TopicACL{ObjectMeta: metav1.ObjectMeta{Name: name}, Spec: v1alpha1.TopicACLSpec{Subjects: subjects, Rules: rules}}
}

func TestRenderIsStableAndLeavesOutWhatTheBrokerWouldRefuse(t *testing.T) {
	good := acl("b-good", v1alpha1.ACLSubjects{Users: []v1alpha1.Username{"alice"}}, v1alpha1.ACLRule{Topic: "devices/%u/#", Access: v1alpha1.AccessPublish})
	other := acl("a-other", v1alpha1.ACLSubjects{AllAuthenticated: true}, v1alpha1.ACLRule{Topic: "status/+", Access: v1alpha1.AccessSubscribe, Effect: v1alpha1.EffectDeny})
	bad := acl("c-bad", v1alpha1.ACLSubjects{AllAuthenticated: true}, v1alpha1.ACLRule{Topic: "a/#/b", Access: v1alpha1.AccessPublish})
	users := []User{{Username: "bob", PasswordHash: "$sha256$MDEyMzQ1Njc4OWFiY2RlZg$" + "ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGk"}, {Username: "alice", PasswordHash: "$sha256$MDEyMzQ1Njc4OWFiY2RlZg$" + "ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGlnZXN0ZGk"}}
	b1, rejected := Render(users, []v1alpha1.TopicACL{good, bad, other})
	b2, _ := Render([]User{users[1], users[0]}, []v1alpha1.TopicACL{other, good, bad})
	if b1.Revision != b2.Revision {
		t.Error("the revision depends on the order of users or ACLs")
	}
	if _, ok := rejected["c-bad"]; !ok || len(b1.ACLs) != 2 || b1.ACLs[0].Name != "a-other" || b1.ACLs[0].Rules[0].Effect != "Deny" {
		t.Errorf("rejected %v, ACLs %+v", rejected, b1.ACLs)
	}
	if _, err := brokerconfig.MarshalBundle(b1); err != nil {
		t.Errorf("the broker would refuse the rendered bundle: %v", err)
	}
}

func TestPermissionsInEvaluationOrder(t *testing.T) {
	acls := []v1alpha1.TopicACL{
		acl("z-devices", v1alpha1.ACLSubjects{Users: []v1alpha1.Username{"alice"}},
			v1alpha1.ACLRule{Topic: "devices/%u/%c/#", Access: v1alpha1.AccessPublish},
			v1alpha1.ACLRule{Topic: "devices/+/secret", Access: v1alpha1.AccessSubscribe, Effect: v1alpha1.EffectDeny}),
		acl("a-everyone", v1alpha1.ACLSubjects{AllAuthenticated: true}, v1alpha1.ACLRule{Topic: "status/#", Access: v1alpha1.AccessSubscribe}),
		acl("m-bob-only", v1alpha1.ACLSubjects{Users: []v1alpha1.Username{"bob"}}, v1alpha1.ACLRule{Topic: "#", Access: v1alpha1.AccessPublishSubscribe}),
		acl("n-anon", v1alpha1.ACLSubjects{Anonymous: true}, v1alpha1.ACLRule{Topic: "public/#", Access: v1alpha1.AccessSubscribe}),
	}
	got := fmt.Sprint(Permissions("alice", acls))
	want := fmt.Sprint([]v1alpha1.EffectiveRule{
		{ACL: "a-everyone", Topic: "status/#", Access: "Subscribe", Effect: "Allow"},
		{ACL: "z-devices", Topic: "devices/alice/%c/#", Access: "Publish", Effect: "Allow"},
		{ACL: "z-devices", Topic: "devices/+/secret", Access: "Subscribe", Effect: "Deny"},
	})
	if got != want {
		t.Errorf("permissions\n got %s\nwant %s", got, want)
	}
}

func TestUnknownUsers(t *testing.T) {
	a := acl("x", v1alpha1.ACLSubjects{Users: []v1alpha1.Username{"zed", "alice", "ghost"}})
	if got := UnknownUsers(&a, map[string]string{"alice": "alice"}); fmt.Sprint(got) != "[ghost zed]" {
		t.Errorf("unknown %v", got)
	}
}
