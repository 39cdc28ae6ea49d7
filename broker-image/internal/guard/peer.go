package guard

import (
	"crypto/tls"
	"crypto/x509"
	"net"
)

// PeerCertificate returns the client certificate the TLS handshake of c
// verified against the client CAs, or nil: plain TCP or WebSocket, no
// certificate given, or one that was not verified. c is what mochi holds for
// a client, the guard's wrapper around the TLS connection (and, for secure
// WebSocket, around the WebSocket, whose NetConn is the TLS connection an
// https server hands over). mochi reads CONNECT before anything asks, so the
// handshake is complete by then.
func PeerCertificate(c net.Conn) *x509.Certificate {
	for {
		switch v := c.(type) {
		case *conn:
			c = v.Conn
		case *wsConn:
			c = v.Conn
		case *tls.Conn:
			return verifiedLeaf(v.ConnectionState())
		default:
			return nil
		}
	}
}

// verifiedLeaf is the leaf of the first verified chain. PeerCertificates
// alone would also hold a certificate the server requested but did not
// verify, which must never authenticate anyone.
func verifiedLeaf(st tls.ConnectionState) *x509.Certificate {
	if !st.HandshakeComplete || len(st.VerifiedChains) == 0 || len(st.VerifiedChains[0]) == 0 {
		return nil
	}
	return st.VerifiedChains[0][0]
}
