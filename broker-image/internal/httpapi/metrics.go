package httpapi

import (
	"strconv"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mqtt-operator/mqtt-operator/broker-image/internal/broker"
)

// collector turns broker.Stats into Prometheus metrics at scrape time, so the
// message path only ever increments atomics.
type collector struct {
	b     *broker.Broker
	descs map[string]*prometheus.Desc
}

var metricHelp = map[string]string{
	"mqtt_connections":                                "Open network connections, before and after CONNECT.",
	"mqtt_clients_connected":                          "Authenticated MQTT clients.",
	"mqtt_max_connections":                            "maxConnections in force: the most clients logged in at once (it reloads in place).",
	"mqtt_ready":                                      "1 when the pod should receive traffic (what /readyz answers: listening, an auth bundle in force, not draining), else 0.",
	"mqtt_connections_accepted_total":                 "Connections accepted by the listeners.",
	"mqtt_connections_refused_total":                  "Connections refused: maxConnections clients logged in, the sockets limit (maxConnections plus the budget of connections not logged in) reached, or a per-address limit.",
	"mqtt_connections_closed_total":                   "Connections closed by the guard, by reason.",
	"mqtt_connection_panics_total":                    "Panics recovered on client connections (each closed that one connection).",
	"mqtt_hook_panics_total":                          "Panics recovered in the broker's hooks on mochi's write and event loops, and in the store's writer (the broker went on: an ACL check denied, a will was dropped, a store batch failed). Any is a bug: report it with the logged stack.",
	"mqtt_bytes_received_total":                       "Bytes received from clients.",
	"mqtt_bytes_sent_total":                           "Bytes sent to clients.",
	"mqtt_messages_received_total":                    "PUBLISH messages accepted from clients, by QoS.",
	"mqtt_messages_sent_total":                        "PUBLISH messages sent to clients, by QoS.",
	"mqtt_messages_dropped_total":                     "Messages not delivered, by reason: slow_subscriber (the client's write queue was full), queue_full (QoS 1/2, maxQueuedMessages reached), stuck_subscriber (the client stopped reading and its queue is full or over its byte budget), offline_over_budget (a persistent session's offline queue is over its byte budget), acl_denied (an MQTT 3.1.1 client's PUBLISH the ACLs deny: acknowledged, as 3.1.1 has no refusal, and dropped).",
	"mqtt_flow_waits_total":                           "Deliveries whose publisher waited for room in the subscriber's nearly full queue of pending writes.",
	"mqtt_flow_wait_seconds_total":                    "Time publishers spent waiting for room in subscribers' queues.",
	"mqtt_flow_slow_subscribers_total":                "Times a subscriber was judged stuck: it made no headway for a while with a full queue; nobody waits for it until it makes headway again.",
	"mqtt_flow_stuck_skips_total":                     "Deliveries to a subscriber judged stuck that found its queue full and did not wait.",
	"mqtt_subscribers_disconnected_over_budget_total": "Subscribers that stopped reading and were disconnected because their queued bytes passed maxQueuedBytesPerClient or the broker's total.",
	"mqtt_queued_bytes":                               "Bytes of messages held for subscribers: waiting to be written, unacknowledged, or queued for offline sessions.",
	"mqtt_subscriptions":                              "Active subscriptions.",
	"mqtt_retained_messages":                          "Retained messages.",
	"mqtt_inflight_messages":                          "Unacknowledged QoS 1 and 2 messages.",
	"mqtt_auth_total":                                 "CONNECT authentications, by result.",
	"mqtt_auth_cache_hits_total":                      "Authentications answered from the verified-credential cache.",
	"mqtt_auth_certificate_total":                     "Successful authentications with a client certificate (also in mqtt_auth_total).",
	"mqtt_acl_denied_total":                           "Publish and subscribe/deliver checks denied by ACL, by access.",
	"mqtt_quota_exceeded_total":                       "Clients disconnected, logins refused or filters refused by a quota, by quota (publish_rate, subscriptions: the broker's; user_connections, user_subscriptions: an MQTTUser's spec.limits).",
	"mqtt_quota_slowed_total":                         "PUBLISH packets read late to keep a client within its user's publishRate (user_publish_rate) or publishBytesPerSecond (user_publish_bytes).",
	"mqtt_quota_slowed_seconds_total":                 "Time clients' reading was paused to keep them within their user's publish rate and bandwidth.",
	"mqtt_sessions_revoked_total":                     "Sessions disconnected because a new auth bundle no longer admits them.",
	"mqtt_reloads_total":                              "Configuration and auth bundle reloads, by result (stale: an auth bundle older than the one in force, ignored).",
	"mqtt_auth_bundle_info":                           "The auth bundle in force (revision label); value is its generation.",
	"mqtt_store_commit_failures_total":                "Batches the persistent store could not commit (disk full, I/O error).",
	"mqtt_store_durable_writes_total":                 "QoS 1/2 messages committed and fsynced before their acknowledgement (durable mode).",
	"mqtt_store_durable_refused_total":                "QoS 1/2 messages refused because their durable write failed.",
	"mqtt_tls_certificate_expiry_timestamp_seconds":   "Expiry of the TLS certificate in use, as a Unix time.",
	"mqtt_tls_reloads_total":                          "TLS certificate reloads, by result.",
	"mqtt_auth_kdf_runs_total":                        "bcrypt password verifications run (cache misses of users with a chosen password).",
	"mqtt_preauth_connections":                        "Connections that have not logged in yet (their own budget, apart from maxConnections).",
	"mqtt_preauth_evicted_total":                      "Connections closed before sending a whole CONNECT, to make room for new ones when the budget of connections not logged in was full.",
	"mqtt_preauth_refused_total":                      "New connections refused by a per-source-address limit, by limit.",
	"mqtt_connect_too_large_total":                    "CONNECT packets over the CONNECT size limit (also in mqtt_connections_closed_total{reason=packet_too_large}).",
	"mqtt_retained_bytes":                             "Bytes of topics and payloads of the retained messages kept.",
	"mqtt_retained_refused_total":                     "Retained messages delivered but not kept: the retained limits (count or bytes) were reached.",
	"mqtt_topic_refused_total":                        "Topic names and filters refused for exceeding the topic length or level limit.",
	"mqtt_topic_alias_refused_total":                  "MQTT 5 PUBLISH packets refused for a topic alias over the limit or unknown (the client was disconnected with 0x94 or 0x82).",
	"mqtt_client_id_refused_total":                    "Logins refused because their client ID names another user's session (live or offline).",
	"mqtt_sessions_deleted_total":                     "Sessions deleted with their queued messages because their user no longer exists.",
	"mqtt_clients_shed_total":                         "Clients this pod told to use another server to even out the load after a scale-out (a rebalance; a drain's are not counted).",
	"mqtt_cluster_peers_connected":                    "Other pods of the cluster this pod has a route to (absent on a single pod).",
	"mqtt_cluster_messages_forwarded_total":           "Messages sent to other pods (one per receiving pod, plus one per message for shared subscriptions).",
	"mqtt_cluster_messages_received_total":            "Messages received from other pods and handed to this pod's subscribers.",
	"mqtt_cluster_retained_copies_total":              "Complete copies of another pod's retained messages this pod took (at start, and when a pod it had lost became reachable again).",
	"mqtt_cluster_partition_held_total":               "QoS 1/2 messages held for a pod this one could not reach, to send when it is back.",
	"mqtt_cluster_partition_replayed_total":           "Held messages sent to a pod that was back.",
	"mqtt_cluster_partition_dropped_total":            "Held messages dropped past the hold limits (64 MiB in all, 10 minutes): subscribers on the unreachable pod miss them.",
	"mqtt_cluster_qos0_dropped_total":                 "Messages from other pods dropped because this pod's inbound queue was full. A QoS 1/2 one is then not acknowledged, so its publisher got an error and can send it again: only QoS 0 ones are lost.",
	"mqtt_store_writes_refused_total":                 "Single changes the persistent store refused (the rest of their batch was stored); lost on restart.",
}

func newCollector(b *broker.Broker) *collector {
	c := &collector{b: b, descs: map[string]*prometheus.Desc{}}
	labels := map[string][]string{
		"mqtt_connections_closed_total": {"reason"}, "mqtt_messages_received_total": {"qos"}, "mqtt_messages_sent_total": {"qos"},
		"mqtt_auth_total": {"result"}, "mqtt_acl_denied_total": {"access"}, "mqtt_quota_exceeded_total": {"quota"}, "mqtt_quota_slowed_total": {"quota"},
		"mqtt_reloads_total": {"result"}, "mqtt_auth_bundle_info": {"revision"}, "mqtt_messages_dropped_total": {"reason"},
		"mqtt_tls_reloads_total": {"result"}, "mqtt_preauth_refused_total": {"limit"},
	}
	for name, help := range metricHelp {
		c.descs[name] = prometheus.NewDesc(name, help, labels[name], nil)
	}
	return c
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.b.Stats()
	gauge := func(name string, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.GaugeValue, v, labels...)
	}
	counter := func(name string, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(c.descs[name], prometheus.CounterValue, float64(v), labels...)
	}
	gauge("mqtt_connections", float64(s.ConnectionsOpen))
	gauge("mqtt_clients_connected", float64(s.ClientsConnected))
	gauge("mqtt_max_connections", float64(s.MaxConnections))
	ready := 0.0
	if s.Ready {
		ready = 1
	}
	gauge("mqtt_ready", ready)
	gauge("mqtt_subscriptions", float64(s.Subscriptions))
	gauge("mqtt_retained_messages", float64(s.Retained))
	gauge("mqtt_inflight_messages", float64(s.Inflight))
	counter("mqtt_connections_accepted_total", s.ConnectionsAccepted)
	counter("mqtt_connections_refused_total", s.ConnectionsRefused)
	counter("mqtt_connections_closed_total", s.PacketTooLarge, "packet_too_large")
	counter("mqtt_connections_closed_total", s.Malformed, "malformed")
	counter("mqtt_connection_panics_total", s.Panics)
	counter("mqtt_hook_panics_total", s.HookPanics)
	counter("mqtt_bytes_received_total", s.BytesIn)
	counter("mqtt_bytes_sent_total", s.BytesOut)
	for q := range 3 {
		counter("mqtt_messages_received_total", s.MessagesIn[q], strconv.Itoa(q))
		counter("mqtt_messages_sent_total", s.MessagesOut[q], strconv.Itoa(q))
	}
	counter("mqtt_messages_dropped_total", s.MessagesDropped, "slow_subscriber")
	counter("mqtt_messages_dropped_total", s.QueueFullDropped, "queue_full")
	counter("mqtt_flow_waits_total", s.FlowWaits)
	ch <- prometheus.MustNewConstMetric(c.descs["mqtt_flow_wait_seconds_total"], prometheus.CounterValue, float64(s.FlowWaitNanos)/1e9)
	counter("mqtt_flow_slow_subscribers_total", s.FlowSlowSubscribers)
	counter("mqtt_flow_stuck_skips_total", s.FlowStuckSkips)
	counter("mqtt_messages_dropped_total", s.FlowRefused, "stuck_subscriber")
	counter("mqtt_messages_dropped_total", s.OfflineDropped, "offline_over_budget")
	counter("mqtt_messages_dropped_total", s.DeniedAcknowledged, "acl_denied")
	counter("mqtt_subscribers_disconnected_over_budget_total", s.OverBudgetDisconnects)
	gauge("mqtt_queued_bytes", float64(s.QueuedBytes))
	counter("mqtt_quota_exceeded_total", s.QoSRefused, "max_qos")
	counter("mqtt_quota_exceeded_total", s.RetainRefused, "retain")
	counter("mqtt_store_commit_failures_total", s.StoreCommitFailures)
	counter("mqtt_store_durable_writes_total", s.DurableWrites)
	counter("mqtt_store_durable_refused_total", s.DurableRefused)
	counter("mqtt_store_writes_refused_total", s.StoreWritesRefused)
	if s.TLSCertNotAfter != 0 {
		gauge("mqtt_tls_certificate_expiry_timestamp_seconds", float64(s.TLSCertNotAfter))
		counter("mqtt_tls_reloads_total", s.TLSReloadsOK, "success")
		counter("mqtt_tls_reloads_total", s.TLSReloadsFailed, "failure")
	}
	counter("mqtt_auth_total", s.AuthSuccess, "success")
	counter("mqtt_auth_total", s.AuthFailure, "failure")
	counter("mqtt_auth_cache_hits_total", s.AuthCacheHits)
	counter("mqtt_auth_kdf_runs_total", s.AuthKDFRuns)
	counter("mqtt_auth_certificate_total", s.AuthCertificate)
	counter("mqtt_acl_denied_total", s.ACLDeniedPublish, "publish")
	counter("mqtt_acl_denied_total", s.ACLDeniedSubscribe, "subscribe")
	counter("mqtt_quota_exceeded_total", s.RateLimited, "publish_rate")
	counter("mqtt_quota_exceeded_total", s.SubscriptionQuota, "subscriptions")
	counter("mqtt_quota_exceeded_total", s.UserConnectionsRefused, "user_connections")
	counter("mqtt_quota_exceeded_total", s.UserSubscriptionsRefused, "user_subscriptions")
	counter("mqtt_quota_slowed_total", s.UserRateSlowed, "user_publish_rate")
	counter("mqtt_quota_slowed_total", s.UserBytesSlowed, "user_publish_bytes")
	ch <- prometheus.MustNewConstMetric(c.descs["mqtt_quota_slowed_seconds_total"], prometheus.CounterValue, float64(s.UserSlowedNanos)/1e9)
	counter("mqtt_sessions_revoked_total", s.SessionsRevoked)
	gauge("mqtt_preauth_connections", float64(s.PreauthPending))
	counter("mqtt_preauth_evicted_total", s.PreauthEvicted)
	counter("mqtt_preauth_refused_total", s.PreauthRefusedAddress, "pending_per_address")
	counter("mqtt_preauth_refused_total", s.PreauthRefusedRate, "connect_rate_per_address")
	counter("mqtt_connect_too_large_total", s.ConnectTooLarge)
	gauge("mqtt_retained_bytes", float64(s.RetainedBytes))
	counter("mqtt_retained_refused_total", s.RetainedRefused)
	counter("mqtt_topic_refused_total", s.TopicTooLong)
	counter("mqtt_topic_alias_refused_total", s.TopicAliasRefused)
	counter("mqtt_client_id_refused_total", s.ClientIDRefused)
	counter("mqtt_sessions_deleted_total", s.SessionsDeleted)
	counter("mqtt_clients_shed_total", s.ClientsShed)
	counter("mqtt_reloads_total", s.ReloadsOK, "success")
	counter("mqtt_reloads_total", s.ReloadsFailed, "failure")
	counter("mqtt_reloads_total", s.ReloadsStale, "stale")
	if n := c.b.Cluster(); n != nil {
		gauge("mqtt_cluster_peers_connected", float64(n.Counters.PeersConnected.Load()))
		counter("mqtt_cluster_messages_forwarded_total", n.Counters.Forwarded.Load())
		counter("mqtt_cluster_messages_received_total", n.Counters.Received.Load())
		counter("mqtt_cluster_qos0_dropped_total", n.DroppedMessages())
		counter("mqtt_cluster_retained_copies_total", n.RetainedCopies())
		held, replayed, dropped := n.PartitionCounters()
		counter("mqtt_cluster_partition_held_total", held)
		counter("mqtt_cluster_partition_replayed_total", replayed)
		counter("mqtt_cluster_partition_dropped_total", dropped)
	}
	if s.Revision != "" {
		gauge("mqtt_auth_bundle_info", float64(s.Generation), s.Revision)
	}
}
