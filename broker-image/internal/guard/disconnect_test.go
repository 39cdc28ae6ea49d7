package guard

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

// The guard's own DISCONNECTs decode as MQTT 5 packets with the reason code
// and a Reason String, as mochi's do.
func TestGuardDisconnectPackets(t *testing.T) {
	for _, c := range []struct {
		pk     []byte
		code   byte
		reason string
	}{
		{disconnectMalformed, 0x81, "malformed packet"},
		{disconnectPacketTooLarge, 0x95, "packet too large"},
	} {
		if c.pk[0] != 0xE0 || int(c.pk[1]) != len(c.pk)-2 {
			t.Fatalf("% x: not a DISCONNECT with a one-byte remaining length", c.pk)
		}
		pk := packets.Packet{ProtocolVersion: 5, FixedHeader: packets.FixedHeader{Type: packets.Disconnect, Remaining: int(c.pk[1])}}
		if err := pk.DisconnectDecode(c.pk[2:]); err != nil {
			t.Fatalf("% x: %v", c.pk, err)
		}
		if pk.ReasonCode != c.code || pk.Properties.ReasonString != c.reason {
			t.Errorf("% x decodes to reason 0x%02x %q, want 0x%02x %q", c.pk, pk.ReasonCode, pk.Properties.ReasonString, c.code, c.reason)
		}
	}
}
