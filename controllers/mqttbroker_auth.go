package controllers

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"runtime"
	"strconv"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/authbundle"
	"github.com/mqtt-operator/mqtt-operator/internal/brokerconfig"
	"github.com/mqtt-operator/mqtt-operator/internal/passwordhash"
	"github.com/mqtt-operator/mqtt-operator/internal/pki"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// renderedAuth is a broker's auth bundle and what went into it.
type renderedAuth struct {
	bundle  *brokerconfig.AuthBundle
	data    []byte            // the bundle as the pods read it
	sources map[string]string // username -> version of its password Secret
	users   map[string]member // MQTTUser name -> what of it is in the bundle
	acls    map[string]member // TopicACL name -> what of it is in the bundle
	secret  *corev1.Secret    // the auth Secret as last written, nil before
	state   *corev1.Secret    // the auth state Secret as last written, nil before
	token   string            // the admin API token
}

// passwordSource names the Secret and key holding a user's credential: the
// referenced Secret, or the connection Secret the user controller writes a
// generated password or a client certificate into.
func passwordSource(u *v1alpha1.MQTTUser) (name, key string) {
	if ref := u.Spec.PasswordSecretRef; ref != nil {
		key = ref.Key
		if key == "" {
			key = resources.ConnectionPasswordKey
		}
		return ref.Name, key
	}
	if u.Spec.Authentication == v1alpha1.AuthenticationClientCertificate {
		return resources.ConnectionSecretName(u), resources.ConnectionClientCertKey
	}
	return resources.ConnectionSecretName(u), resources.ConnectionPasswordKey
}

// sourceVersion identifies a password by the version of the Secret holding
// it, never by the password itself. Resource versions are unique across a
// resource type, so a recreated Secret gets a new one.
func sourceVersion(resourceVersion, key string) string {
	return resourceVersion + "/" + key
}

// gatherAuth renders the broker's auth bundle from its MQTTUsers, their
// password Secrets and its TopicACLs. A hash is reused while the Secret it
// came from is unchanged, or while the password still verifies against it,
// so the bundle's revision moves only when its content does; hashing a
// person-chosen password (bcrypt) costs ~50 ms, a generated one microseconds.
func (r *MQTTBrokerReconciler) gatherAuth(ctx context.Context, b *v1alpha1.MQTTBroker) (*renderedAuth, error) {
	users, err := usersOf(ctx, r.Client, b.Namespace, b.Name)
	if err != nil {
		return nil, err
	}
	acls, err := aclsOf(ctx, r.Client, b.Namespace, b.Name)
	if err != nil {
		return nil, err
	}
	out := &renderedAuth{sources: map[string]string{}, users: map[string]member{}, acls: map[string]member{}}
	previous, err := r.previousAuth(ctx, b, out)
	if err != nil {
		return nil, err
	}
	owners, _ := authbundle.Owners(users)
	var jobs []hashJob
	var certUsers []authbundle.User
	for i := range users {
		u := &users[i]
		username := authbundle.Username(u)
		if owners[username] != u.Name {
			continue // a username conflict: the older MQTTUser holds it
		}
		name, key := passwordSource(u)
		ref := client.ObjectKey{Namespace: b.Namespace, Name: name}
		chosen := u.Spec.PasswordSecretRef != nil
		if p := previous[username]; chosen && p.hash != "" {
			// A tenant's Secret is read from the API server, not a cache:
			// only when it changed since its password was hashed.
			version, err := r.secrets.version(ctx, ref)
			if apierrors.IsNotFound(err) {
				continue // gone: the user controller reports it
			} else if err != nil {
				return nil, fmt.Errorf("looking up the password Secret of MQTTUser %s: %w", u.Name, err)
			}
			if v := sourceVersion(version, key); v == p.version {
				jobs = append(jobs, hashJob{user: u.Name, generation: u.Generation, username: username, version: v, chosen: true, previous: p,
					limits: authbundle.Limits(u)})
				continue
			}
		}
		secret := &corev1.Secret{}
		if err := r.secrets.get(ctx, ref, secret); apierrors.IsNotFound(err) {
			continue // not there (yet): the user controller reports it
		} else if err != nil {
			return nil, fmt.Errorf("reading the password Secret of MQTTUser %s: %w", u.Name, err)
		}
		if u.Spec.Authentication == v1alpha1.AuthenticationClientCertificate {
			if fps := certificateFingerprints(secret, key); len(fps) > 0 {
				out.users[u.Name] = member{generation: u.Generation, source: sourceVersion(secret.ResourceVersion, key)}
				certUsers = append(certUsers, authbundle.User{Username: username, CertificateSHA256: fps, Limits: authbundle.Limits(u)})
			}
			continue
		}
		password := string(secret.Data[key])
		if password == "" || (chosen && passwordhash.ValidateChosen(password) != nil) {
			continue // the user controller reports what is wrong
		}
		jobs = append(jobs, hashJob{user: u.Name, generation: u.Generation, username: username, password: password,
			version: sourceVersion(secret.ResourceVersion, key), chosen: chosen, previous: previous[username], limits: authbundle.Limits(u)})
	}
	hashAll(jobs)
	bundleUsers := make([]authbundle.User, 0, len(jobs)+len(certUsers))
	bundleUsers = append(bundleUsers, certUsers...)
	for _, j := range jobs {
		if j.hash == "" {
			continue
		}
		out.users[j.user] = member{generation: j.generation, source: j.version}
		out.sources[j.username] = j.version
		bundleUsers = append(bundleUsers, authbundle.User{Username: j.username, PasswordHash: j.hash, Limits: j.limits})
	}
	bundle, rejected := authbundle.Render(bundleUsers, acls)
	for i := range acls {
		if _, bad := rejected[acls[i].Name]; !bad && acls[i].DeletionTimestamp.IsZero() {
			out.acls[acls[i].Name] = member{generation: acls[i].Generation}
		}
	}
	out.bundle = bundle
	return out, nil
}

// certificateFingerprints are the client certificates a certificate user
// may log in with: the one in its connection Secret and the one that
// replaced (recorded by the user controller). None while the user controller
// has not issued one yet.
func certificateFingerprints(secret *corev1.Secret, key string) []string {
	cert, err := pki.ParseCertificate(secret.Data[key])
	if err != nil {
		return nil
	}
	fps := []string{brokerconfig.CertificateFingerprint(cert.Raw)}
	if prev := secret.Annotations[resources.AnnotationPreviousCertificate]; brokerconfig.ValidFingerprint(prev) && prev != fps[0] {
		fps = append(fps, prev)
	}
	return fps
}

// previousAuth reads what was written last time: the bundle's hashes and the
// versions of the Secrets they came from, and the admin token (creating it
// once).
func (r *MQTTBrokerReconciler) previousAuth(ctx context.Context, b *v1alpha1.MQTTBroker, out *renderedAuth) (map[string]previousHash, error) {
	token, err := r.adminToken(ctx, b)
	if err != nil {
		return nil, err
	}
	out.token = token
	previous := map[string]previousHash{}
	out.secret, err = r.getSecret(ctx, b.Namespace, resources.AuthSecretName(b))
	if err != nil || out.secret == nil {
		return previous, err
	}
	// Damaged or missing bookkeeping only costs rehashing.
	for username, hash := range r.bundleHashes.of(client.ObjectKeyFromObject(b), out.secret) {
		previous[username] = previousHash{hash: hash}
	}
	if out.state, err = r.getSecret(ctx, b.Namespace, resources.AuthStateSecretName(b)); err != nil {
		return nil, err
	}
	if out.state != nil {
		versions := map[string]string{}
		_ = json.Unmarshal(out.state.Data[resources.AuthSourcesKey], &versions)
		for username, v := range versions {
			if p, ok := previous[username]; ok {
				p.version = v
				previous[username] = p
			}
		}
	}
	return previous, nil
}

// getSecret reads a Secret from the cache; nil when it does not exist.
func (r *MQTTBrokerReconciler) getSecret(ctx context.Context, namespace, name string) (*corev1.Secret, error) {
	return readSecret(ctx, r.Client, namespace, name)
}

// readSecret reads a Secret through c; nil when it does not exist.
func readSecret(ctx context.Context, c client.Reader, namespace, name string) (*corev1.Secret, error) {
	secret := &corev1.Secret{}
	err := c.Get(ctx, client.ObjectKey{Namespace: namespace, Name: name}, secret)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading Secret %s: %w", name, err)
	}
	return secret, nil
}

// adminToken returns the broker's admin API token, creating its Secret with
// a random token the first time. It is never rewritten: running pods hold it.
func (r *MQTTBrokerReconciler) adminToken(ctx context.Context, b *v1alpha1.MQTTBroker) (string, error) {
	secret, err := r.getSecret(ctx, b.Namespace, resources.AdminSecretName(b))
	if err != nil {
		return "", err
	}
	if secret != nil && len(secret.Data[resources.AdminTokenKey]) > 0 {
		return string(secret.Data[resources.AdminTokenKey]), nil
	}
	raw := make([]byte, 32)
	_, _ = rand.Read(raw) // crypto/rand.Read does not fail on supported platforms
	token := hex.EncodeToString(raw)
	if err := r.Client.Create(ctx, resources.AdminSecret(b, token)); apierrors.IsAlreadyExists(err) {
		// Created by an earlier reconcile the cache has not seen yet.
		secret := &corev1.Secret{}
		if err := r.APIReader.Get(ctx, client.ObjectKey{Namespace: b.Namespace, Name: resources.AdminSecretName(b)}, secret); err != nil {
			return "", fmt.Errorf("reading the admin token Secret: %w", err)
		}
		return string(secret.Data[resources.AdminTokenKey]), nil
	} else if err != nil {
		return "", fmt.Errorf("creating the admin token Secret: %w", err)
	}
	return token, nil
}

type previousHash struct{ hash, version string }

// hashJob is one user's password to hash, or whose hash to reuse.
type hashJob struct {
	user                        string
	generation                  int64
	username, password, version string
	chosen                      bool
	previous                    previousHash
	hash                        string // empty when the password cannot be hashed
	limits                      *brokerconfig.UserLimits
}

// hashAll fills in every job's hash, reusing what it can and running the
// rest on all CPUs.
func hashAll(jobs []hashJob) {
	work := make(chan *hashJob)
	var wg sync.WaitGroup
	for range runtime.GOMAXPROCS(0) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := range work {
				j.resolve()
			}
		}()
	}
	for i := range jobs {
		work <- &jobs[i]
	}
	close(work)
	wg.Wait()
}

func (j *hashJob) resolve() {
	if j.previous.hash != "" && j.previous.version == j.version {
		j.hash = j.previous.hash
		return
	}
	// The Secret changed; if the password did not, keep the hash (and the
	// bundle's revision). Verifying costs what hashing costs, no more.
	if j.previous.hash != "" {
		if ok, _ := passwordhash.Verify(j.previous.hash, j.password); ok {
			j.hash = j.previous.hash
			return
		}
	}
	if j.chosen {
		j.hash, _ = passwordhash.HashChosen(j.password) // validated by the caller
		return
	}
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	j.hash, _ = passwordhash.HashGenerated(j.password, salt) // a generated password is long enough
}

// nextGeneration is one above the generation of the bundle in force.
func nextGeneration(previous *corev1.Secret) int64 {
	if previous == nil {
		return 1
	}
	g, _ := strconv.ParseInt(previous.Annotations[resources.AnnotationAuthGeneration], 10, 64)
	return g + 1
}

// bundleHashes keeps, per broker, the password hashes of its bundle Secret
// as last parsed, so a reconcile parses (and gunzips) the bundle only when
// the Secret changed, not on every pod or Secret event.
type bundleHashes struct {
	mu     sync.Mutex
	parsed map[types.NamespacedName]parsedBundle
}

type parsedBundle struct {
	resourceVersion string
	hashes          map[string]string
}

// of returns username -> hash of the bundle in secret. The map is shared:
// callers only read it.
func (c *bundleHashes) of(broker types.NamespacedName, secret *corev1.Secret) map[string]string {
	c.mu.Lock()
	defer c.mu.Unlock()
	if p, ok := c.parsed[broker]; ok && p.resourceVersion == secret.ResourceVersion {
		return p.hashes
	}
	hashes := map[string]string{}
	if bundle, err := brokerconfig.ParseBundle(secret.Data[brokerconfig.BundleFileName]); err == nil {
		for _, u := range bundle.Users {
			hashes[u.Username] = u.PasswordHash
		}
	}
	if c.parsed == nil {
		c.parsed = map[types.NamespacedName]parsedBundle{}
	}
	c.parsed[broker] = parsedBundle{secret.ResourceVersion, hashes}
	return hashes
}

func (c *bundleHashes) forget(broker types.NamespacedName) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.parsed, broker)
}
