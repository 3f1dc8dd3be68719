package channels

import (
	"encoding/json"
)

// mergeTimeline merges a channel's own timeline entries with the
// dispatcher's log of its deliveries, each list in its own order, by their
// "at": the same fixed-width layout in both (wire.TimeFormat), so strings
// compare as times. On a tie the channel's entry comes first. Timelines
// written before the dispatcher kept its own log hold its entries among
// the channel's; they stay where they are.
func mergeTimeline(own, deliveries []json.RawMessage) []json.RawMessage {
	if len(deliveries) == 0 {
		return own
	}
	if len(own) == 0 {
		return deliveries
	}
	out := make([]json.RawMessage, 0, len(own)+len(deliveries))
	i, j := 0, 0
	ai, aj := entryAt(own[0]), entryAt(deliveries[0])
	for i < len(own) && j < len(deliveries) {
		if aj < ai {
			out = append(out, deliveries[j])
			if j++; j < len(deliveries) {
				aj = entryAt(deliveries[j])
			}
			continue
		}
		out = append(out, own[i])
		if i++; i < len(own) {
			ai = entryAt(own[i])
		}
	}
	out = append(out, own[i:]...)
	return append(out, deliveries[j:]...)
}

// entryAt is a timeline entry's "at", or "" (first) if it has none.
func entryAt(raw json.RawMessage) string {
	var e struct {
		At string `json:"at"`
	}
	_ = json.Unmarshal(raw, &e)
	return e.At
}
