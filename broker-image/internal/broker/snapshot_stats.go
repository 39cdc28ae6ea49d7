package broker

import "sync/atomic"

// Stats is a point-in-time copy of the broker's counters and gauges.
type Stats struct {
	ConnectionsOpen, ClientsConnected, Subscriptions, Retained, Inflight int64
	ConnectionsAccepted, ConnectionsRefused, PacketTooLarge, Malformed   uint64
	Panics, BytesIn, BytesOut                                            uint64
	// HookPanics: panics recovered in our hooks and the store's writer (package contain).
	HookPanics                                                           uint64
	MessagesIn, MessagesOut                                              [3]uint64
	MessagesDropped, QueueFullDropped                                    uint64
	QoSRefused, RetainRefused                                            uint64
	StoreCommitFailures, DurableWrites, DurableRefused                   uint64
	StoreWritesRefused                                                   uint64
	TLSCertNotAfter                                                      int64 // unix seconds; 0 without TLS
	TLSReloadsOK, TLSReloadsFailed                                       uint64
	AuthSuccess, AuthFailure, AuthCacheHits, AuthCertificate             uint64
	ACLDeniedPublish, ACLDeniedSubscribe, RateLimited, SubscriptionQuota uint64
	SessionsRevoked, ReloadsOK, ReloadsFailed                            uint64
	FlowWaits, FlowWaitNanos, FlowSlowSubscribers                        uint64
	ClientIDRefused, SessionsDeleted, ReloadsStale, AuthKDFRuns          uint64
	// Connections not logged in yet (guard/preauth.go).
	PreauthPending                                                             int64
	PreauthEvicted, PreauthRefusedAddress, PreauthRefusedRate, ConnectTooLarge uint64
	RetainedBytes, RetainedKept                                                int64
	RetainedRefused, TopicTooLong                                              uint64
	FlowStuckSkips, FlowRefused, OverBudgetDisconnects, OfflineDropped         uint64
	QueuedBytes                                                                int64
	// TopicAliasRefused counts clients disconnected for a topic alias above
	// the maximum, 0, or never set (policy/aliases.go).
	TopicAliasRefused  uint64
	DeniedAcknowledged uint64
	// ClientsShed counts the clients sent to other pods by a rebalance
	// (shed.go); a drain's are not counted.
	ClientsShed uint64
	// Per-user quotas (MQTTUser spec.limits, policy/userlimits.go).
	UserConnectionsRefused, UserSubscriptionsRefused uint64
	UserRateSlowed, UserBytesSlowed, UserSlowedNanos uint64
	Revision                                         string
	Generation                                       int64
	// MaxConnections is the limit in force (it reloads in place); Ready is
	// what /readyz answers.
	MaxConnections int64
	Ready          bool
}

// Stats reads every counter once.
func (b *Broker) Stats() Stats {
	g, p, info := &b.guard.Stats, &b.Policy.Counters, b.server.Info
	s := Stats{
		ConnectionsOpen:     g.Open.Load(),
		ClientsConnected:    atomic.LoadInt64(&info.ClientsConnected),
		Subscriptions:       atomic.LoadInt64(&info.Subscriptions),
		Retained:            atomic.LoadInt64(&info.Retained),
		Inflight:            atomic.LoadInt64(&info.Inflight),
		ConnectionsAccepted: g.Accepted.Load(),
		ConnectionsRefused: g.RefusedOverLimit.Load() + p.ServerFull.Load() + g.Preauth.RefusedPending.Load() +
			g.Preauth.RefusedAddress.Load() + g.Preauth.RefusedRate.Load(),
		PreauthPending: g.Preauth.Pending.Load(), PreauthEvicted: g.Preauth.Evicted.Load(),
		PreauthRefusedAddress: g.Preauth.RefusedAddress.Load(), PreauthRefusedRate: g.Preauth.RefusedRate.Load(),
		ConnectTooLarge: g.Preauth.ConnectTooLarge.Load(),
		RetainedBytes:   b.Policy.RetainedBytes(), RetainedKept: b.Policy.RetainedKept(), RetainedRefused: p.RetainedRefused.Load(), TopicTooLong: p.TopicTooLong.Load(),
		PacketTooLarge: g.ClosedPacketTooLarge.Load(), Malformed: g.ClosedMalformed.Load(),
		Panics: g.Panics.Load(), HookPanics: b.panics.Count.Load(), BytesIn: g.BytesIn.Load(), BytesOut: g.BytesOut.Load(),
		MessagesDropped: uint64(atomic.LoadInt64(&info.MessagesDropped)), QueueFullDropped: uint64(atomic.LoadInt64(&info.InflightDropped)),
		QoSRefused: p.QoSRefused.Load(), RetainRefused: p.RetainRefused.Load(),
		AuthSuccess: p.AuthSuccess.Load(), AuthFailure: p.AuthFailure.Load(), AuthCacheHits: p.AuthCacheHits.Load(), AuthCertificate: p.AuthCertificate.Load(),
		ACLDeniedPublish: p.ACLDeniedPublish.Load(), ACLDeniedSubscribe: p.ACLDeniedSubscribe.Load(),
		RateLimited: p.RateLimited.Load(), SubscriptionQuota: p.SubscriptionQuota.Load(),
		SessionsRevoked: p.Revoked.Load(), ReloadsOK: b.reloadOK.Load(), ReloadsFailed: b.reloadFailed.Load(),
		ClientIDRefused: p.ClientIDRefused.Load(), SessionsDeleted: p.SessionsDeleted.Load(), ReloadsStale: b.reloadStale.Load(), AuthKDFRuns: p.KDFRuns.Load(),
		DeniedAcknowledged: p.DeniedAcknowledged.Load(),
		Revision:           b.Revision(),
	}
	s.TopicAliasRefused = p.TopicAliasRefused.Load()
	s.ClientsShed = b.shedTotal.Load()
	u := &b.Policy.UserQuotas
	s.UserConnectionsRefused, s.UserSubscriptionsRefused = u.ConnectionsRefused.Load(), u.SubscriptionsRefused.Load()
	s.UserRateSlowed, s.UserBytesSlowed, s.UserSlowedNanos = u.RateSlowed.Load(), u.BytesSlowed.Load(), u.SlowedNanos.Load()
	s.MaxConnections = b.guard.Limits.MaxConnections()
	s.Ready = b.Ready() == nil
	if b.store != nil {
		s.StoreCommitFailures = b.store.Counters.CommitFailures.Load()
		s.StoreWritesRefused = b.store.Counters.WritesRefused.Load()
		s.DurableWrites, s.DurableRefused = b.store.Counters.DurableWrites.Load(), b.store.Counters.DurableRefused.Load()
	}
	if b.certs != nil {
		s.TLSCertNotAfter = b.certs.NotAfter().Unix()
		s.TLSReloadsOK, s.TLSReloadsFailed = b.certs.ReloadsOK.Load(), b.certs.ReloadsFailed.Load()
	}
	if f := b.Policy.Flow; f != nil {
		s.FlowWaits, s.FlowWaitNanos, s.FlowSlowSubscribers = f.Stats.Waits.Load(), f.Stats.WaitNano.Load(), f.Stats.Stuck.Load()
		s.FlowStuckSkips, s.FlowRefused = f.Stats.StuckSkips.Load(), f.Stats.Refused.Load()
		s.OverBudgetDisconnects, s.OfflineDropped = f.Stats.OverBudgetDisconnects.Load(), f.Stats.OfflineDropped.Load()
		s.QueuedBytes = f.QueuedBytes()
	}
	for q := range 3 {
		s.MessagesIn[q], s.MessagesOut[q] = g.PublishIn[q].Load(), g.PublishOut[q].Load()
	}
	b.mu.Lock()
	s.Generation = b.generation
	b.mu.Unlock()
	return s
}
