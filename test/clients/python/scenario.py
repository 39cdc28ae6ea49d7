"""paho-mqtt (Debian's python3-paho-mqtt 1.6) side of the client-library
conformance tests (broker-image/clientlibs_test.go starts the broker and runs
this script with /usr/bin/python3).

    python3 scenario.py <scenario>

Environment: as test/clients/js/scenario.mjs (MQTT_URL, MQTT_VERSION,
MQTT_USER, MQTT_PASSWORD, MQTT_PREFIX, MQTT_DENIED, MQTT_MAX_PACKET).
Prints "ok: <what was seen>" and exits 0, or "FAIL: <why>" and exits 1.
"""

import os
import sys
import threading
import time
import urllib.parse

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

ENV = os.environ
URL = urllib.parse.urlparse(ENV["MQTT_URL"])
V5 = ENV.get("MQTT_VERSION", "5") == "5"
PREFIX = ENV.get("MQTT_PREFIX", "")
SCENARIO = sys.argv[1] if len(sys.argv) > 1 else ""
_ids = [0]


def fail(why):
    print("FAIL: " + why, flush=True)
    os._exit(1)


class Conn:
    """A connected client running its network loop in a thread; messages in order."""

    def __init__(self, password=None, connect_props=None, will=None):
        _ids[0] += 1
        cid = "py-%s-%d-%d" % (SCENARIO, os.getpid(), _ids[0])
        transport = "websockets" if URL.scheme == "ws" else "tcp"
        if V5:
            self.c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv5, transport=transport)
        else:
            self.c = mqtt.Client(client_id=cid, protocol=mqtt.MQTTv311, transport=transport, clean_session=True)
        if transport == "websockets":
            self.c.ws_set_options(path=URL.path or "/mqtt")
        self.c.username_pw_set(ENV["MQTT_USER"], ENV["MQTT_PASSWORD"] if password is None else password)
        if will:
            self.c.will_set(**will)
        self.messages = []
        self.connack = None
        self.disconnect_rc = None
        self.connected = threading.Event()
        self.gone = threading.Event()
        self.c.on_connect = self._on_connect
        self.c.on_message = lambda c, u, m: self.messages.append((m.topic, m.payload.decode()))
        self.c.on_disconnect = self._on_disconnect
        kwargs = {"keepalive": 30}
        if V5:
            kwargs["clean_start"] = True
            kwargs["properties"] = connect_props
        self.c.connect(URL.hostname, URL.port, **kwargs)
        self.c.loop_start()
        if not self.connected.wait(5):
            fail("no CONNACK in 5 s")

    def _on_connect(self, c, userdata, flags, rc, properties=None):
        code = rc.value if hasattr(rc, "value") else rc
        self.connack = (code, properties)
        self.connected.set()

    def _on_disconnect(self, c, userdata, rc, properties=None):
        self.disconnect_rc = rc.value if hasattr(rc, "value") else rc
        self.gone.set()

    def code(self):
        return self.connack[0]

    def subscribe(self, topic, qos):
        result = []
        done = threading.Event()

        def on_subscribe(c, u, mid, granted, properties=None):
            result.extend(g.value if hasattr(g, "value") else g for g in granted)
            done.set()

        self.c.on_subscribe = on_subscribe
        self.c.subscribe(topic, qos)
        if not done.wait(5):
            fail("no SUBACK for " + topic)
        return result[0]

    def publish(self, topic, payload, qos, props=None, wait=True):
        info = self.c.publish(topic, payload, qos, properties=props)
        if wait and qos > 0:
            info.wait_for_publish(5)
            if not info.is_published():
                fail("publish to %s (QoS %d) not acknowledged in 5 s" % (topic, qos))
        return info

    def close(self):
        self.c.disconnect()
        self.c.loop_stop()


def until(what, cond, seconds=20):
    deadline = time.time() + seconds
    while not cond():
        if time.time() > deadline:
            fail("timed out after %d s waiting for %s" % (seconds, what))
        time.sleep(0.01)


def user_props():
    p = Properties(PacketTypes.PUBLISH)
    p.UserProperty = [("origin", "python"), ("n", "1")]
    return p


def pubsub():
    c = Conn()
    c.subscribe(PREFIX + "/pubsub/#", 2)
    for i in range(30):
        c.publish("%s/pubsub/%d" % (PREFIX, i % 3), "m%d" % i, i % 3)
    until("30 messages", lambda: len(c.messages) >= 30)
    # In order per topic (one QoS each): paho-mqtt hands a QoS 2 message
    # over at PUBREL, so across QoS levels its order is its own.
    for q in range(3):
        got = [p for t, p in c.messages if t.endswith("/%d" % q)]
        if got != ["m%d" % (3 * i + q) for i in range(10)]:
            fail("QoS %d out of order: %s" % (q, ",".join(got)))
    c.close()
    return "30 messages at QoS 0/1/2, in order per topic"


def shared():
    a, b, everyone = Conn(), Conn(), Conn()
    for m in (a, b):
        granted = m.subscribe("$share/grp/%s/shared/#" % PREFIX, 1)
        if granted > 2:
            fail("shared subscription refused: SUBACK %d" % granted)
    everyone.subscribe(PREFIX + "/shared/#", 1)
    n = 40
    for i in range(n):
        everyone.publish(PREFIX + "/shared/x", "s%d" % i, 1)
    until("%d messages at the plain subscriber and across the group" % n,
          lambda: len(everyone.messages) >= n and len(a.messages) + len(b.messages) >= n)
    time.sleep(0.3)  # a duplicate would arrive now
    distinct = {p for _, p in a.messages + b.messages}
    if len(a.messages) + len(b.messages) != n or len(distinct) != n:
        fail("group got %d+%d, %d distinct, want %d" % (len(a.messages), len(b.messages), len(distinct), n))
    for m in (a, b, everyone):
        m.close()
    return "group members got %d+%d of %d, each once" % (len(a.messages), len(b.messages), n)


def puback_props():
    c = Conn()
    for qos in (1, 2):
        c.publish("%s/props/%d" % (PREFIX, qos), "with properties", qos, props=user_props())
    if c.gone.is_set():
        fail("disconnected after the acknowledgement (reason %s)" % c.disconnect_rc)
    c.close()
    return "QoS 1 and 2 publishes with user properties completed"


def receive_maximum():
    props = Properties(PacketTypes.CONNECT)
    props.ReceiveMaximum = 20
    sub = Conn(connect_props=props)
    sub.subscribe(PREFIX + "/rxmax/#", 1)
    pub = Conn()
    n = 1000
    infos = [pub.publish(PREFIX + "/rxmax/t", str(i), 1, wait=False) for i in range(n)]
    for info in infos:
        info.wait_for_publish(20)
    until("%d messages at a subscriber with Receive Maximum 20" % n, lambda: len(sub.messages) >= n, 30)
    got = [p for _, p in sub.messages[:n]]
    for i in range(n):
        if got[i] != str(i):
            fail("message %d is %s" % (i, got[i]))
    pub.close()
    sub.close()
    return "%d QoS 1 messages in order through a window of 20" % n


def topic_alias():
    sub = Conn()
    sub.subscribe(PREFIX + "/alias/#", 1)
    pub = Conn()
    _, props = pub.connack
    limit = getattr(props, "TopicAliasMaximum", 0) if props else 0
    if limit < 1:
        fail("CONNACK advertises Topic Alias Maximum %s" % limit)
    p = Properties(PacketTypes.PUBLISH)
    p.TopicAlias = 1
    pub.publish(PREFIX + "/alias/one", "a1", 1, props=p)
    pub.publish("", "a2", 1, props=p)
    until("2 messages", lambda: len(sub.messages) >= 2)
    for topic, payload in sub.messages:
        if topic != PREFIX + "/alias/one":
            fail("message %s arrived on %r" % (payload, topic))
    pub.close()
    sub.close()
    return "server Topic Alias Maximum %d; aliased publish arrived on the resolved topic" % limit


def server_limits():
    c = Conn()
    _, props = c.connack
    want = int(ENV["MQTT_MAX_PACKET"])
    got = getattr(props, "MaximumPacketSize", None)
    if got != want:
        fail("CONNACK Maximum Packet Size %s, want %d" % (got, want))
    c.publish(PREFIX + "/big", b"x" * (want + 16), 0, wait=False)
    if not c.gone.wait(5):
        fail("still connected after an over-size packet")
    if c.disconnect_rc != 0x95:
        fail("disconnect reason %s, want 0x95" % c.disconnect_rc)
    c.c.loop_stop()
    return "CONNACK Maximum Packet Size %d; over-size publish -> DISCONNECT 0x95" % got


def denied_publish():
    c = Conn()
    c.subscribe(PREFIX + "/after/#", 1)
    c.publish(ENV["MQTT_DENIED"], "not allowed", 1)
    c.publish(PREFIX + "/after/x", "still connected", 1)
    until("the next message", lambda: len(c.messages) >= 1 or c.gone.is_set())
    if c.gone.is_set():
        fail("the broker closed the connection")
    c.close()
    return "denied QoS 1 publish acknowledged and dropped; connection kept"


def will_delay():
    sub = Conn()
    sub.subscribe(PREFIX + "/will/#", 1)
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 30
    will_props = Properties(PacketTypes.WILLMESSAGE)
    will_props.WillDelayInterval = 3
    w = Conn(connect_props=props, will={"topic": PREFIX + "/will/w", "payload": "gone", "qos": 1, "properties": will_props})
    w.c.loop_stop()
    lost = time.time()
    w.c.socket().close()  # the connection drops without DISCONNECT
    until("the will", lambda: len(sub.messages) >= 1, 10)
    delay = time.time() - lost
    if delay < 3 or delay > 3.5:
        fail("will delay 3 s, will arrived after %.2f s" % delay)
    sub.close()
    return "will delay 3 s: will arrived after %.2f s" % delay


def bad_password():
    try:
        c = Conn(password="not-the-password")
    except SystemExit:
        raise
    code = c.code()
    c.c.loop_stop()
    return "code=%d" % code


SCENARIOS = {
    "pubsub": pubsub, "shared": shared, "pubackProps": puback_props, "receiveMaximum": receive_maximum,
    "topicAlias": topic_alias, "serverLimits": server_limits, "deniedPublish": denied_publish,
    "willDelay": will_delay, "badPassword": bad_password,
}

if __name__ == "__main__":
    if SCENARIO not in SCENARIOS:
        fail("unknown scenario %s; known: %s" % (SCENARIO, ", ".join(SCENARIOS)))
    threading.Timer(60, lambda: fail("scenario took over 60 s")).start()
    print("ok: " + SCENARIOS[SCENARIO](), flush=True)
    os._exit(0)
