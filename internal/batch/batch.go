// Package batch gathers the items of a channel into batches, for the
// loops that send many small writes to Redis in one round trip.
package batch

// Drain calls send with the items of ch, at most max at a time, until ch
// is closed and empty. A batch is the item that arrives first and those
// already waiting behind it: under load one call carries many items, and
// an idle loop sends a lone item at once. send may keep nothing of the
// slice it gets, which is reused.
func Drain[T any](ch <-chan T, max int, send func([]T)) {
	b := make([]T, 0, max)
	for it := range ch {
		b = append(b[:0], it)
	more:
		for len(b) < max {
			select {
			case it, ok := <-ch:
				if !ok {
					break more
				}
				b = append(b, it)
			default:
				break more
			}
		}
		send(b)
	}
}
