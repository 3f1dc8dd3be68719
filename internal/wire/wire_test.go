package wire

import (
	"testing"
	"time"
)

// Times of any zone and any fraction have one width, and order as strings
// as they do in time.
func TestStampIsFixedWidthAndOrders(t *testing.T) {
	base := time.Date(2026, 1, 2, 3, 4, 5, 0, time.FixedZone("x", 5*3600))
	prev := ""
	for _, d := range []time.Duration{0, time.Millisecond, 10 * time.Millisecond, 999 * time.Millisecond, time.Second, time.Hour} {
		s := Stamp(base.Add(d))
		if len(s) != len("2026-01-01T22:04:05.000Z") {
			t.Fatalf("%q is not fixed width", s)
		}
		if s <= prev {
			t.Fatalf("%q does not order after %q", s, prev)
		}
		prev = s
	}
}
