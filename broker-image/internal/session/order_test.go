package session

import (
	"testing"

	"github.com/mochi-mqtt/server/v2/packets"
)

func ids(q []packets.Packet) []uint16 {
	out := make([]uint16, len(q))
	for i, p := range q {
		out[i] = p.PacketID
	}
	return out
}

func TestSortRestoresQueueOrder(t *testing.T) {
	cases := map[string]struct {
		in   []packets.Packet
		want []uint16
	}{
		"same second": {
			[]packets.Packet{{PacketID: 3, Created: 100}, {PacketID: 1, Created: 100}, {PacketID: 2, Created: 100}},
			[]uint16{1, 2, 3},
		},
		"packet IDs wrapped within a second": {
			[]packets.Packet{{PacketID: 1, Created: 100}, {PacketID: 65535, Created: 100}, {PacketID: 2, Created: 100}, {PacketID: 65534, Created: 100}},
			[]uint16{65534, 65535, 1, 2},
		},
		"older seconds first, whatever the IDs": {
			[]packets.Packet{{PacketID: 1, Created: 200}, {PacketID: 900, Created: 100}, {PacketID: 5, Created: 300}},
			[]uint16{900, 1, 5},
		},
		"seconds whose low 16 bits wrapped": {
			[]packets.Packet{{PacketID: 2, Created: 65536}, {PacketID: 1, Created: 65535}},
			[]uint16{1, 2},
		},
	}
	for name, tc := range cases {
		Sort(tc.in)
		got := ids(tc.in)
		for i := range got {
			if got[i] != tc.want[i] {
				t.Errorf("%s: order %v, want %v", name, got, tc.want)
				break
			}
		}
	}
}

func TestRenumberKeepsOrderUnderMochisSixteenBitSort(t *testing.T) {
	for _, tc := range []struct {
		n   int
		now int64
	}{{5, 1_000_000}, {5, 65536*20 + 2}, {65535, 65536*20 + 10}, {1, 42}} {
		got := Renumber(tc.n, tc.now)
		for i, c := range got {
			if c > tc.now {
				t.Errorf("n=%d now=%d: creation time %d is in the future", tc.n, tc.now, c)
			}
			if i > 0 && uint16(c) <= uint16(got[i-1]) {
				t.Fatalf("n=%d now=%d: low 16 bits not increasing at %d: %d after %d", tc.n, tc.now, i, uint16(c), uint16(got[i-1]))
			}
		}
	}
}
