// Package wire holds the fixed shapes of what riverhub writes for other
// nodes, packages and clients to read: its times and the JSON of its own
// structs.
package wire

import (
	"encoding/json"
	"time"

	fastjson "github.com/segmentio/encoding/json"
)

// TimeFormat is RFC 3339 in UTC with milliseconds, as payloads, records
// and timeline entries carry times. It is fixed width, so such times order
// as strings (a channel's timeline merges channels' and dispatch's entries
// by their "at" that way).
const TimeFormat = "2006-01-02T15:04:05.000Z07:00"

// Stamp formats t in TimeFormat, in UTC.
func Stamp(t time.Time) string { return t.UTC().Format(TimeFormat) }

// MustJSON marshals one of riverhub's own plain structs, which cannot fail;
// it panics if it does.
func MustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return b
}

// Decode is json.Unmarshal for what riverhub itself wrote (a stored task,
// a record's fields, a room's message): for valid JSON it fills what
// json.Unmarshal fills, in a quarter of the time. On an error it may have
// filled other fields than json.Unmarshal would (it stops at a type error,
// and fills fields before a syntax error), and its messages differ, so a
// client's input is decoded with encoding/json, to keep the errors the API
// documents. (Its encoder is not used: it writes omitempty fields of an
// embedded struct pointer wrongly.)
func Decode(data []byte, v any) error { return fastjson.Unmarshal(data, v) }
