package kubectlmqtt

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"github.com/eclipse/paho.golang/paho"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/portforward"
	"k8s.io/client-go/transport/spdy"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/internal/resources"
)

// session is how to reach the broker as one MQTTUser.
type session struct {
	username, password string
	tls                *tls.Config
	pod                *corev1.Pod
	port               int
}

func (p *plugin) pub(ctx context.Context, args []string) error {
	var as string
	var qos int
	var retain, useTLS bool
	pos, err := flags("pub", args, func(fs *flag.FlagSet) {
		fs.StringVar(&as, "as", "", "the MQTTUser to publish as (required)")
		fs.IntVar(&qos, "qos", 1, "QoS 0, 1 or 2")
		fs.BoolVar(&retain, "retain", false, "retain the message")
		fs.BoolVar(&useTLS, "tls", false, "use the broker's TLS port, verifying it with the CA in the user's connection Secret")
	}, 2, "pub --as USER [--qos 1] [--retain] [--tls] TOPIC MESSAGE")
	if err != nil {
		return err
	}
	c, stop, err := p.connect(ctx, as, useTLS, qos, nil)
	if err != nil {
		return err
	}
	defer stop()
	pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	resp, err := c.Publish(pctx, &paho.Publish{Topic: pos[0], QoS: byte(qos), Retain: retain, Payload: []byte(pos[1])})
	if resp != nil && resp.ReasonCode >= 0x80 {
		return fmt.Errorf("pub: the broker refused the message (0x%02x%s): the ACLs do not let %s publish to %q, or a limit applies", resp.ReasonCode, reasonString(resp.Properties), as, pos[0])
	}
	if err != nil {
		return fmt.Errorf("pub: %w", err)
	}
	_, _ = fmt.Fprintf(p.Err, "published to %s as %s (QoS %d)\n", pos[0], as, qos)
	return nil
}

func reasonString(props *paho.PublishResponseProperties) string {
	if props == nil || props.ReasonString == "" {
		return ""
	}
	return ": " + props.ReasonString
}

func (p *plugin) sub(ctx context.Context, args []string) error {
	var as string
	var qos, count int
	var timeout time.Duration
	var useTLS bool
	pos, err := flags("sub", args, func(fs *flag.FlagSet) {
		fs.StringVar(&as, "as", "", "the MQTTUser to subscribe as (required)")
		fs.IntVar(&qos, "qos", 1, "QoS 0, 1 or 2")
		fs.IntVar(&count, "count", 0, "exit after this many messages (0: run until interrupted or --timeout)")
		fs.DurationVar(&timeout, "timeout", 0, "exit after this long (0: no limit); an error if --count messages did not arrive")
		fs.BoolVar(&useTLS, "tls", false, "use the broker's TLS port, verifying it with the CA in the user's connection Secret")
	}, 1, "sub --as USER [--qos 1] [--count N] [--timeout 30s] [--tls] FILTER")
	if err != nil {
		return err
	}
	messages := make(chan *paho.Publish, 1024)
	c, stop, err := p.connect(ctx, as, useTLS, qos, func(m *paho.Publish) {
		select {
		case messages <- m:
		default: // a flood faster than the terminal: drop rather than stall the client
		}
	})
	if err != nil {
		return err
	}
	defer stop()
	sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	ack, err := c.Subscribe(sctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: pos[0], QoS: byte(qos)}}})
	if ack != nil && len(ack.Reasons) == 1 && ack.Reasons[0] >= 0x80 {
		return fmt.Errorf("sub: the broker refused the subscription to %q (0x%02x): the ACLs do not let %s read it, or the filter is invalid", pos[0], ack.Reasons[0], as)
	}
	if err != nil {
		return fmt.Errorf("sub: %w", err)
	}
	_, _ = fmt.Fprintf(p.Err, "subscribed to %s as %s\n", pos[0], as)
	var deadline <-chan time.Time
	if timeout > 0 {
		deadline = time.After(timeout)
	}
	for n := 0; count == 0 || n < count; n++ {
		select {
		case m := <-messages:
			_, _ = fmt.Fprintf(p.Out, "%s %s\n", m.Topic, m.Payload)
		case <-deadline:
			if count > 0 {
				return fmt.Errorf("sub: %d of %d messages after %v: %w", n, count, timeout, errTimeout)
			}
			return nil
		case <-ctx.Done():
			return nil
		}
	}
	return nil
}

// connect logs in (MQTT 5, so refusals come with a reason code) to the
// user's broker as that user, through a port-forward to one of its ready
// pods, or directly to the pod's IP. received gets the messages.
func (p *plugin) connect(ctx context.Context, as string, useTLS bool, qos int, received func(*paho.Publish)) (*paho.Client, func(), error) {
	if as == "" {
		return nil, nil, errors.New("--as USER is required: the MQTTUser whose connection Secret to use")
	}
	if qos < 0 || qos > 2 {
		return nil, nil, fmt.Errorf("--qos %d: want 0, 1 or 2", qos)
	}
	s, err := p.session(ctx, as, useTLS)
	if err != nil {
		return nil, nil, err
	}
	addr, stopForward, err := p.reach(ctx, s.pod, s.port)
	if err != nil {
		return nil, nil, err
	}
	where := fmt.Sprintf("%s/%s", s.pod.Namespace, s.pod.Name)
	d := &net.Dialer{Timeout: 10 * time.Second}
	var conn net.Conn
	if s.tls != nil {
		conn, err = (&tls.Dialer{NetDialer: d, Config: s.tls}).DialContext(ctx, "tcp", addr)
	} else {
		conn, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		stopForward()
		return nil, nil, fmt.Errorf("connecting to %s: %w", where, err)
	}
	// One uninterrupted write per packet: paho takes the lock when the
	// connection offers one; over TLS its pinger could otherwise land a
	// PINGREQ between another packet's buffers.
	cfg := paho.ClientConfig{Conn: &packetLocked{Conn: conn}}
	if received != nil {
		cfg.OnPublishReceived = []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			received(pr.Packet)
			return true, nil
		}}
	}
	c := paho.NewClient(cfg)
	cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	ack, err := c.Connect(cctx, &paho.Connect{ClientID: fmt.Sprintf("kubectl-mqtt-%d", time.Now().UnixNano()%1e9), KeepAlive: 30, CleanStart: true,
		Username: s.username, UsernameFlag: true, Password: []byte(s.password), PasswordFlag: s.password != ""})
	if err != nil {
		_ = conn.Close()
		stopForward()
		if ack != nil {
			return nil, nil, fmt.Errorf("connecting to %s as %s: refused with reason 0x%02x (0x86: bad username or password; the user may not be enforced yet)", where, as, ack.ReasonCode)
		}
		return nil, nil, fmt.Errorf("connecting to %s as %s: %w", where, as, err)
	}
	return c, func() { _ = c.Disconnect(&paho.Disconnect{}); stopForward() }, nil
}

// session reads what connecting as the MQTTUser needs: its connection
// Secret (credentials, ports, CA) and a ready pod of its broker.
func (p *plugin) session(ctx context.Context, as string, useTLS bool) (*session, error) {
	u := &v1alpha1.MQTTUser{}
	if err := p.c.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: as}, u); err != nil {
		return nil, p.explain(err, "get", "MQTTUser "+as, p.Namespace)
	}
	name := u.Status.ConnectionSecretName
	if name == "" {
		return nil, fmt.Errorf("MQTTUser %s has no connection Secret yet (is it Ready? kubectl get mqttuser %s)", as, as)
	}
	sec := &corev1.Secret{}
	if err := p.c.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: name}, sec); err != nil {
		return nil, p.explain(err, "get", "Secret "+name, p.Namespace)
	}
	s := &session{username: string(sec.Data[resources.ConnectionUsernameKey]), password: string(sec.Data[resources.ConnectionPasswordKey])}
	portKey := resources.ConnectionPortKey
	cert, key := sec.Data[resources.ConnectionClientCertKey], sec.Data[resources.ConnectionClientKeyKey]
	if useTLS || len(cert) > 0 || len(sec.Data[portKey]) == 0 {
		portKey = resources.ConnectionTLSPortKey
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(sec.Data[resources.ConnectionCAKey]) {
			return nil, fmt.Errorf("connection Secret %s has no CA (ca.crt) to verify the broker with: does the broker have a TLS listener?", name)
		}
		host := fmt.Sprintf("%s.%s.svc", u.Spec.BrokerRef.Name, p.Namespace)
		s.tls = &tls.Config{RootCAs: pool, ServerName: host, MinVersion: tls.VersionTLS12}
		if len(cert) > 0 {
			pair, err := tls.X509KeyPair(cert, key)
			if err != nil {
				return nil, fmt.Errorf("the client certificate in Secret %s does not load: %w", name, err)
			}
			s.tls.Certificates = []tls.Certificate{pair}
		}
	}
	port, err := strconv.Atoi(string(sec.Data[portKey]))
	if err != nil {
		return nil, fmt.Errorf("connection Secret %s has no %s: the broker has no such listener", name, portKey)
	}
	s.port = port

	b := &v1alpha1.MQTTBroker{}
	if err := p.c.Get(ctx, client.ObjectKey{Namespace: p.Namespace, Name: u.Spec.BrokerRef.Name}, b); err != nil {
		return nil, p.explain(err, "get", "MQTTBroker "+u.Spec.BrokerRef.Name, p.Namespace)
	}
	pods := &corev1.PodList{}
	if err := p.c.List(ctx, pods, client.InNamespace(p.Namespace), client.MatchingLabels(resources.SelectorLabels(b))); err != nil {
		return nil, p.explain(err, "list", "pods", p.Namespace)
	}
	for i := range pods.Items {
		if podReady(&pods.Items[i]) {
			s.pod = &pods.Items[i]
			return s, nil
		}
	}
	return nil, fmt.Errorf("MQTTBroker %s has no ready pod", b.Name)
}

// reach returns an address that reaches port on pod: its IP (--direct), or
// a local port forwarded to it through the API server.
func (p *plugin) reach(ctx context.Context, pod *corev1.Pod, port int) (string, func(), error) {
	if p.Direct {
		return net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(port)), func() {}, nil
	}
	transport, upgrader, err := spdy.RoundTripperFor(p.Config)
	if err != nil {
		return "", nil, err
	}
	u, err := url.Parse(p.cs.CoreV1().RESTClient().Post().Resource("pods").Namespace(pod.Namespace).Name(pod.Name).SubResource("portforward").URL().String())
	if err != nil {
		return "", nil, err
	}
	dialer := spdy.NewDialer(upgrader, &http.Client{Transport: transport}, http.MethodPost, u)
	stop, ready := make(chan struct{}), make(chan struct{})
	fw, err := portforward.NewOnAddresses(dialer, []string{"127.0.0.1"}, []string{"0:" + strconv.Itoa(port)}, stop, ready, io.Discard, io.Discard)
	if err != nil {
		return "", nil, err
	}
	failed := make(chan error, 1)
	go func() { failed <- fw.ForwardPorts() }()
	select {
	case <-ready:
	case err := <-failed:
		return "", nil, p.explain(err, "create", "pods/portforward", pod.Namespace)
	case <-ctx.Done():
		close(stop)
		return "", nil, ctx.Err()
	}
	ports, err := fw.GetPorts()
	if err != nil || len(ports) == 0 {
		close(stop)
		return "", nil, fmt.Errorf("port-forward to %s/%s: %v", pod.Namespace, pod.Name, err)
	}
	return net.JoinHostPort("127.0.0.1", strconv.Itoa(int(ports[0].Local))), func() { close(stop) }, nil
}

// packetLocked offers paho a lock to write each packet whole.
type packetLocked struct {
	net.Conn
	sync.Mutex
}
